//! The caller as the policies see it: who, with which roles, over which divisions, for
//! which department.

use model::{Department, DivisionCode};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub sub: String,
    pub name: String,
    pub roles: Vec<String>,
    pub jurisdiction: Vec<DivisionCode>,
    pub dept: Option<Department>,
}

impl Principal {
    /// Whether `code` (a grid, community …) lies inside the principal's jurisdiction.
    pub fn covers(&self, code: &DivisionCode) -> bool {
        self.jurisdiction.iter().any(|j| j.contains(code))
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
