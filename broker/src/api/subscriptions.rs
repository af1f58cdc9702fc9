//! Exchange: departments' subscriptions, signed webhook deliveries and pull feeds.

use super::routes::Routes;

/// The routes of this module.
pub fn routes() -> Routes {
    Routes::new()
}
