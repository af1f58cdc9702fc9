//! The OpenAPI description of the v1 API, generated from the handlers' annotations.
//!
//! Guarantees: every route the router serves is listed here (a test compares the two).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "SafeGrid broker API", version = "1", description = "Secure data exchange for street-level public-safety governance. Every read of personal data needs a bearer token and an X-Purpose header, and is audited."),
    paths(
        super::healthz, super::readyz, crate::metrics::metrics, super::whoami, super::ingest, super::receipt,
        super::get_resident, super::get_house, super::get_event,
        super::resident_by_source, super::house_by_source, super::event_by_source,
        super::search::search_residents, super::search::search_houses, super::search::search_events, super::search::search_all,
        super::policy::policy_info, super::policy::preview, super::policy::replace_file,
        super::rejects::list_rejects, super::rejects::file_rejects, super::rejects::dismiss_reject,
        super::resolution::list_reviews, super::resolution::decide_review, super::resolution::split,
        super::compliance::search_records, super::compliance::checkpoint,
        super::compliance::inclusion_proof, super::compliance::consistency_proof,
        super::compliance::export, super::compliance::anomalies, super::compliance::resident_report,
    ),
    components(schemas(
        super::error::ErrorBody, super::error::ErrorDetail, super::Health, super::WhoAmI, super::UnifiedId,
        super::search::SearchPage, super::search::SearchItem,
        super::policy::PolicyInfo, super::policy::Preview, super::policy::FieldPreview,
        super::policy::DepartmentLevel, super::policy::ClassPreview, super::policy::DepartmentPreview,
        super::policy::PolicyChanged,
        super::rejects::RejectPage, super::rejects::RejectItem, super::rejects::FiledReject,
        super::resolution::ReviewList, super::resolution::ReviewItem, super::resolution::ReviewSide,
        super::resolution::ReviewDecision, super::resolution::SplitRequest,
        super::compliance::RecordsPage, super::compliance::CheckpointBody,
        super::compliance::InclusionBody, super::compliance::ConsistencyBody,
        super::compliance::AnomalyReport, super::compliance::AnomalyBody,
        super::compliance::AnomalySettings, super::compliance::ResidentReport,
        super::compliance::ReportEntry,
        crate::ingest::Receipt, crate::ingest::Rejection,
        crate::resolve::Profile, crate::resolve::MergedField, crate::resolve::Alternative,
        crate::resolve::MergedTag, crate::resolve::SourceRef, crate::resolve::EntityRef,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_route_is_documented() {
        let doc = ApiDoc::openapi();
        for path in [
            "/v1/ingest/{department}",
            "/v1/residents/{id}",
            "/v1/houses/{id}",
            "/v1/events/{id}",
            "/v1/residents/by-source/{department}/{source_id}",
            "/healthz",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
    }
}
