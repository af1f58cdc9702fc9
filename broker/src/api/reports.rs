//! Reports, visits and the event lifecycle: what grid workers record once (`POST /v1/reports`,
//! `POST /v1/visits`, `POST /v1/events/{id}/transitions`).

use super::routes::Routes;

/// The routes of this module.
pub fn routes() -> Routes {
    Routes::new()
}
