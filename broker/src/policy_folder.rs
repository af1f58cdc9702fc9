//! The live policy: the compiled [`PolicySet`] read from the policy folder, swapped
//! atomically when the folder changes.
//!
//! Guarantees: a reload that fails to parse or compile keeps the previous set and logs why;
//! a replacement is validated by compiling the whole set before it is written.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use policies::authz::{Permission, PolicyError, PolicyFiles, PolicySet};
use policies::TableFiles;

/// Reads a policy folder; a table file that is absent falls back to the shipped default.
pub fn read_policy_files(dir: &Path) -> Result<PolicyFiles, PolicyError> {
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
            sharing: read("sharing.csv", &t.sharing)?,
            routing: read("routing.csv", &t.routing)?,
        },
    })
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
            Some(dir) => read_policy_files(dir)?,
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
        let files = read_policy_files(dir)?;
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
            Some(dir) => read_policy_files(dir)?,
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
    use policies::Level;

    fn purposes() -> Vec<String> {
        policies::DEFAULT_PURPOSES
            .iter()
            .map(|p| (*p).to_owned())
            .collect()
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
