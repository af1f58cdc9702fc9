//! SafeGrid's authorization policy: the casbin model and policy files that operators edit,
//! and where to find the defaults shipped with the product.
//!
//! Guarantees: [`default_policy_dir`] always names a folder holding `model.conf` and
//! `policy.csv`, the defaults the product is tested against.

use std::path::PathBuf;

pub mod authz;
pub mod exchange;
pub mod mask;
pub mod minor;
pub mod principal;
pub mod redact;
pub mod tables;
pub mod view;

pub use principal::Principal;
pub use tables::{FieldTables, Level, TableError, TableFiles, CLASSES};

/// Roles the product knows. A token may carry others; they grant nothing.
pub const ROLES: [&str; 9] = [
    "grid_worker",
    "community_officer",
    "street_officer",
    "dept_publisher",
    "dept_analyst",
    "dept_subscriber",
    "compliance_officer",
    "security_admin",
    "system_admin",
];

/// (action, object) pairs the broker asks the policy about.
pub const PERMISSIONS: [(&str, &str); 12] = [
    ("read", "personal_data"),
    ("ingest", "own_department"),
    ("read", "own_receipts"),
    ("read", "audit_log"),
    ("write", "policy"),
    ("read", "operations"),
    ("preview", "policy"),
    ("use", "break_glass"),
    ("open", "case"),
    ("manage", "subscriptions"),
    ("report", "events"),
    ("read", "sharing_stats"),
];

/// The lifecycle of an event (上报 -> 受理 -> 分拨 -> 处置 -> 核查 -> 结案, or 驳回): the states
/// an event may be moved to. `reported` is where every report starts.
pub const EVENT_STATES: [&str; 8] = [
    "reported",
    "accepted",
    "dispatched",
    "in_progress",
    "resolved",
    "verified",
    "closed",
    "rejected",
];

/// The purpose whose field levels a break-glass read uses (on top of the stated purpose's),
/// each role its own, never above an owner department's restriction.
pub const BREAK_GLASS_PURPOSE: &str = "break_glass";

/// Purposes of use the shipped policy is written for.
pub const DEFAULT_PURPOSES: [&str; 6] = [
    "routine_visit",
    "dispute_mediation",
    "elderly_care",
    "emergency",
    "case_investigation",
    "child_protection",
];

/// The policy files shipped with SafeGrid (`policies/default/` in the source tree).
pub fn default_policy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("default")
}

/// The default casbin model, embedded so a binary without the source tree still has it.
pub const DEFAULT_MODEL: &str = include_str!("../default/model.conf");
/// The default casbin policy, embedded likewise.
pub const DEFAULT_POLICY: &str = include_str!("../default/policy.csv");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_files_exist_and_match_embedded() {
        let dir = default_policy_dir();
        let model = std::fs::read_to_string(dir.join("model.conf")).unwrap_or_default();
        assert_eq!(model, DEFAULT_MODEL);
        assert!(DEFAULT_POLICY.contains("dept_publisher, *, own_department, ingest"));
    }
}
