//! Role permissions: the casbin policy, compiled once at load into a table the request path
//! can consult without calling casbin.
//!
//! Guarantees: [`Permissions`] answers exactly what the casbin enforcer answers for every
//! known role and permission (a test checks the whole matrix), and is immutable once built, so
//! a request never waits on casbin or on a lock.

use std::collections::HashSet;
use std::path::Path;

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("casbin policy is invalid: {0}")]
    Casbin(String),
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
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::ReadPersonalData,
        Permission::IngestOwnDepartment,
        Permission::ReadOwnReceipts,
        Permission::ReadAuditLog,
        Permission::WritePolicy,
        Permission::ReadOperations,
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

/// The compiled (role, permission) table.
#[derive(Debug, Clone)]
pub struct Permissions {
    granted: HashSet<(String, Permission)>,
    /// Identifies the policy text this table was compiled from.
    pub version: String,
}

impl Permissions {
    /// Compiles the policy in `dir` (`model.conf`, `policy.csv`), or the shipped defaults.
    pub async fn load(dir: Option<&Path>) -> Result<Permissions, PolicyError> {
        let (model, policy) = match dir {
            Some(dir) => (read(&dir.join("model.conf"))?, read(&dir.join("policy.csv"))?),
            None => (
                policies::DEFAULT_MODEL.to_owned(),
                policies::DEFAULT_POLICY.to_owned(),
            ),
        };
        Permissions::compile(&model, &policy).await
    }

    pub async fn compile(model: &str, policy: &str) -> Result<Permissions, PolicyError> {
        let enforcer = enforcer(model, policy).await?;
        let mut granted = HashSet::new();
        for role in policies::ROLES {
            for permission in Permission::ALL {
                let (act, obj) = permission.casbin_pair();
                let allowed = enforcer
                    .enforce((role, act, obj))
                    .map_err(|err| PolicyError::Casbin(err.to_string()))?;
                if allowed {
                    granted.insert((role.to_owned(), permission));
                }
            }
        }
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{model}\0{policy}").as_bytes(),
        );
        Ok(Permissions {
            granted,
            version: format!("sha256:{}", hex::encode(&digest.as_ref()[..8])),
        })
    }

    /// Whether any of `roles` holds `permission`.
    pub fn allows(&self, roles: &[String], permission: Permission) -> bool {
        roles
            .iter()
            .any(|role| self.granted.contains(&(role.clone(), permission)))
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

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|err| PolicyError::File {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compiled_table_matches_casbin_over_the_whole_matrix() {
        let table = Permissions::load(None).await.unwrap();
        let enforcer = enforcer(policies::DEFAULT_MODEL, policies::DEFAULT_POLICY)
            .await
            .unwrap();
        for role in policies::ROLES.iter().chain(["unknown_role"].iter()) {
            for permission in Permission::ALL {
                let (act, obj) = permission.casbin_pair();
                assert_eq!(
                    table.allows(&[(*role).to_owned()], permission),
                    enforcer.enforce((*role, act, obj)).unwrap(),
                    "{role} {permission:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn separation_of_duties_holds_in_the_default_policy() {
        let table = Permissions::load(None).await.unwrap();
        let has = |role: &str, p| table.allows(&[role.to_owned()], p);
        assert!(has("grid_worker", Permission::ReadPersonalData));
        assert!(!has("grid_worker", Permission::IngestOwnDepartment));
        assert!(has("dept_publisher", Permission::IngestOwnDepartment));
        assert!(!has("dept_publisher", Permission::ReadPersonalData));
        for admin in ["compliance_officer", "security_admin", "system_admin"] {
            assert!(!has(admin, Permission::ReadPersonalData), "{admin}");
        }
        assert!(!has("compliance_officer", Permission::WritePolicy));
    }

    #[tokio::test]
    async fn policy_text_changes_the_version() {
        let a = Permissions::load(None).await.unwrap();
        let policy = format!("{}\np, grid_worker, read, audit_log\n", policies::DEFAULT_POLICY);
        let b = Permissions::compile(policies::DEFAULT_MODEL, &policy).await.unwrap();
        assert_ne!(a.version, b.version);
        assert!(b.allows(&["grid_worker".to_owned()], Permission::ReadAuditLog));
    }
}
