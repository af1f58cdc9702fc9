//! The authorization policy: casbin files (the authoring format and source of truth) compiled
//! at load into tables the request path reads without calling casbin, and reloaded when the
//! files change.
//!
//! Guarantees:
//! - [`PolicySet`] answers exactly what the casbin enforcer answers for every known role,
//!   purpose, permission and field class (a test checks the whole matrix), and is immutable:
//!   a request never waits on casbin or on a lock held by it.
//! - Every set carries a version (a digest of its files), so every decision knows the policy
//!   version it used.
//! - A reload that fails to parse or compile keeps the previous set and logs why.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};
use policies::{FieldTables, Level, TableFiles};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("casbin policy is invalid: {0}")]
    Casbin(String),
    #[error(transparent)]
    Table(#[from] policies::TableError),
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
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::ReadPersonalData,
        Permission::IngestOwnDepartment,
        Permission::ReadOwnReceipts,
        Permission::ReadAuditLog,
        Permission::WritePolicy,
        Permission::ReadOperations,
        Permission::PreviewPolicy,
        Permission::UseBreakGlass,
        Permission::OpenCase,
    ];

    /// The (action, object) pair the casbin policy names it by.
    pub fn casbin_pair(self) -> (&'static str, &'static str) {
        let index = Permission::ALL
            .iter()
            .position(|p| *p == self)
            .unwrap_or_default();
        policies::PERMISSIONS[index]
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
            model: policies::DEFAULT_MODEL.to_owned(),
            policy: policies::DEFAULT_POLICY.to_owned(),
            tables: TableFiles::defaults(),
        }
    }

    /// Every file name a policy folder holds.
    pub fn names() -> Vec<&'static str> {
        let mut names = vec!["model.conf", "policy.csv"];
        names.extend(TableFiles::NAMES);
        names
    }

    /// Reads a policy folder; a table file that is absent falls back to the shipped default.
    pub fn read(dir: &Path) -> Result<PolicyFiles, PolicyError> {
        let defaults = PolicyFiles::defaults();
        let read = |name: &str, default: &str| -> Result<String, PolicyError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(err)
                    if err.kind() == std::io::ErrorKind::NotFound
                        && name != "policy.csv"
                        && name != "model.conf" =>
                {
                    Ok(default.to_owned())
                }
                Err(err) => Err(PolicyError::File {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                }),
            }
        };
        let t = &defaults.tables;
        Ok(PolicyFiles {
            model: read("model.conf", &defaults.model)?,
            policy: read("policy.csv", &defaults.policy)?,
            tables: TableFiles {
                field_classes: read("field_classes.csv", &t.field_classes)?,
                tag_classes: read("tag_classes.csv", &t.tag_classes)?,
                department_classes: read("department_classes.csv", &t.department_classes)?,
                owner_restrictions: read("owner_restrictions.csv", &t.owner_restrictions)?,
                masked_labels: read("masked_labels.csv", &t.masked_labels)?,
            },
        })
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
            _ => return None,
        }
        Some(self)
    }

    fn digest(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            &self.model,
            &self.policy,
            &self.tables.field_classes,
            &self.tables.tag_classes,
            &self.tables.department_classes,
            &self.tables.owner_restrictions,
            &self.tables.masked_labels,
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
    /// role -> purpose -> level per class (indexed like `policies::CLASSES`).
    levels: HashMap<String, HashMap<String, [Level; policies::CLASSES.len()]>>,
    pub tables: FieldTables,
    pub purposes: Vec<String>,
}

impl PolicySet {
    pub async fn compile(
        files: &PolicyFiles,
        purposes: &[String],
    ) -> Result<PolicySet, PolicyError> {
        let tables = FieldTables::parse(&files.tables)?;
        let enforcer = enforcer(&files.model, &files.policy).await?;
        let check = |role: &str, purpose: &str, obj: &str, act: &str| {
            enforcer
                .enforce((role, purpose, obj, act))
                .map_err(|err| PolicyError::Casbin(err.to_string()))
        };
        let mut granted = HashSet::new();
        for role in policies::ROLES {
            for permission in Permission::ALL {
                let (act, obj) = permission.casbin_pair();
                if check(role, "*", obj, act)? {
                    granted.insert((role.to_owned(), permission));
                }
            }
        }
        let mut levels: HashMap<String, HashMap<String, [Level; policies::CLASSES.len()]>> =
            HashMap::new();
        let with_break_glass = purposes
            .iter()
            .map(String::as_str)
            .chain([policies::BREAK_GLASS_PURPOSE]);
        for role in policies::ROLES {
            for purpose in with_break_glass.clone() {
                let mut row = [Level::Hidden; policies::CLASSES.len()];
                for (slot, class) in row.iter_mut().zip(policies::CLASSES) {
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
        let Some(index) = policies::CLASSES.iter().position(|c| *c == class) else {
            return Level::Hidden;
        };
        self.levels
            .get(role)
            .and_then(|by_purpose| by_purpose.get(purpose))
            .map_or(Level::Hidden, |row| row[index])
    }

    /// Whether one role holds `permission`.
    pub fn role_allows(&self, role: &str, permission: Permission) -> bool {
        self.granted.contains(&(role.to_owned(), permission))
    }
}

async fn enforcer(model: &str, policy: &str) -> Result<Enforcer, PolicyError> {
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

/// The current policy set, swapped atomically on reload.
#[derive(Debug)]
pub struct PolicyHandle {
    current: RwLock<Arc<PolicySet>>,
    dir: Option<PathBuf>,
    purposes: Vec<String>,
}

impl PolicyHandle {
    /// Loads the policy from `dir` (or the shipped defaults).
    pub async fn load(
        dir: Option<&Path>,
        purposes: &[String],
    ) -> Result<PolicyHandle, PolicyError> {
        let files = match dir {
            Some(dir) => PolicyFiles::read(dir)?,
            None => PolicyFiles::defaults(),
        };
        let set = PolicySet::compile(&files, purposes).await?;
        Ok(PolicyHandle {
            current: RwLock::new(Arc::new(set)),
            dir: dir.map(Path::to_path_buf),
            purposes: purposes.to_vec(),
        })
    }

    pub fn current(&self) -> Arc<PolicySet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn allows(&self, roles: &[String], permission: Permission) -> bool {
        self.current().allows(roles, permission)
    }

    pub fn version(&self) -> String {
        self.current().version.clone()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Recompiles from the folder; keeps the current set if that fails. Returns whether the
    /// version changed.
    pub async fn reload(&self) -> Result<bool, PolicyError> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        let files = PolicyFiles::read(dir)?;
        let version = files.digest();
        if version == self.current().version {
            return Ok(false);
        }
        let set = PolicySet::compile(&files, &self.purposes).await?;
        tracing::info!(version = %set.version, "policy reloaded");
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(true)
    }

    /// Validates `text` as a replacement for policy file `name` by compiling the whole set.
    pub async fn validate_replacement(
        &self,
        name: &str,
        text: &str,
    ) -> Result<PolicySet, PolicyError> {
        let base = match &self.dir {
            Some(dir) => PolicyFiles::read(dir)?,
            None => PolicyFiles::defaults(),
        };
        let files = base
            .with_file(name, text.to_owned())
            .ok_or_else(|| PolicyError::File {
                path: name.to_owned(),
                reason: format!(
                    "not a policy file; files are {}",
                    PolicyFiles::names().join(", ")
                ),
            })?;
        PolicySet::compile(&files, &self.purposes).await
    }

    /// Polls the folder and reloads on change, until the handle is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        if self.dir.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                let Some(handle) = weak.upgrade() else {
                    break;
                };
                if let Err(err) = handle.reload().await {
                    tracing::error!(error = %err, "policy reload failed; keeping the previous policy");
                }
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn purposes() -> Vec<String> {
        policies::DEFAULT_PURPOSES
            .iter()
            .map(|p| (*p).to_owned())
            .collect()
    }

    #[tokio::test]
    async fn compiled_set_matches_casbin_over_the_whole_matrix() {
        let files = PolicyFiles::defaults();
        let set = PolicySet::compile(&files, &purposes()).await.unwrap();
        let enforcer = enforcer(&files.model, &files.policy).await.unwrap();
        for role in policies::ROLES.iter().chain(["unknown_role"].iter()) {
            let roles = [(*role).to_owned()];
            for permission in Permission::ALL {
                let (act, obj) = permission.casbin_pair();
                assert_eq!(
                    set.allows(&roles, permission),
                    enforcer.enforce((*role, "*", obj, act)).unwrap(),
                    "{role} {permission:?}"
                );
            }
            for purpose in purposes() {
                for class in policies::CLASSES {
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

    #[tokio::test]
    async fn reload_picks_up_a_changed_file_and_keeps_the_old_set_on_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.conf"), policies::DEFAULT_MODEL).unwrap();
        std::fs::write(dir.path().join("policy.csv"), policies::DEFAULT_POLICY).unwrap();
        let handle = PolicyHandle::load(Some(dir.path()), &purposes())
            .await
            .unwrap();
        let before = handle.version();
        assert!(!handle.reload().await.unwrap());
        let policy = format!(
            "{}\np, grid_worker, *, field:health, masked\n",
            policies::DEFAULT_POLICY
        );
        std::fs::write(dir.path().join("policy.csv"), policy).unwrap();
        assert!(handle.reload().await.unwrap());
        assert_ne!(handle.version(), before);
        let gw = ["grid_worker".to_owned()];
        assert_eq!(
            handle.current().level(&gw, "routine_visit", "health"),
            Level::Masked
        );
        std::fs::write(
            dir.path().join("field_classes.csv"),
            "resident, name, nonsense\n",
        )
        .unwrap();
        assert!(handle.reload().await.is_err());
        assert_eq!(
            handle.current().level(&gw, "routine_visit", "health"),
            Level::Masked
        );
    }
}
