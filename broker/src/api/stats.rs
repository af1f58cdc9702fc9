//! Sharing statistics (`GET /v1/stats/sharing`): what the street leadership reports upward.

use super::routes::Routes;

/// The routes of this module.
pub fn routes() -> Routes {
    Routes::new()
}
