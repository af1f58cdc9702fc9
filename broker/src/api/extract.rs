//! Request extractors that authenticate and authorize before a handler runs.
//!
//! Guarantees (STYLE rule 4): a handler can only obtain personal data through a [`Reader`],
//! which exists only for a caller whose token verified, whose role may read personal data and
//! who stated a configured purpose; ingest goes through a [`Publisher`], which exists only for
//! a caller whose role may publish and, on a connection with a client certificate (mTLS), whose
//! token names the certificate's department. A refused attempt is audited before the error
//! leaves.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use crate::auth::AuthError;
use policies::authz::Permission;
use policies::Principal;

use super::error::ApiError;
use super::{AppState, RequestContext};

/// Any authenticated caller.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub context: RequestContext,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let context = parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_default();
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let verified = match token {
            None => Err(AuthError::Missing),
            Some(token) => state.authenticator.verify(token),
        };
        let principal = match verified {
            Ok(principal) => principal,
            Err(err) => {
                let error = ApiError::unauthenticated(err.to_string());
                state
                    .audit_unauthenticated(&context, &audit_endpoint(parts), &err)
                    .await?;
                return Err(error);
            }
        };
        // The staff member's subject id (not a resident's data) on the request span.
        tracing::Span::current().record("sub", principal.sub.as_str());
        if let Err(wait) = state.rate.check(&principal.sub) {
            state.metrics.count_limit_refusal("rate_limited");
            state
                .audit_rate_limited(&principal, &context, &audit_endpoint(parts))
                .await?;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this principal; wait for Retry-After seconds (limits.rate_per_second)",
            )
            .retry_after(wait));
        }
        Ok(Authenticated { principal, context })
    }
}

/// The endpoint an audit record names: the route template when the request matched one
/// (ids in paths stay out of the log), else the path cut to 200 bytes — a refused request
/// must not let a client write megabytes into the log.
pub(crate) fn audit_endpoint(parts: &Parts) -> String {
    if let Some(path) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return path.as_str().to_owned();
    }
    let path = parts.uri.path();
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

/// A caller allowed to read personal data, with a stated purpose of use.
#[derive(Debug, Clone)]
pub struct Reader {
    pub principal: Principal,
    pub context: RequestContext,
    pub purpose: String,
    pub case_id: Option<String>,
    /// The stated reason, when the caller broke the glass (`X-Break-Glass`) and may.
    pub break_glass: Option<String>,
}

impl Reader {
    /// What this caller may see in this request.
    pub fn plan(&self, state: &AppState) -> policies::view::ViewPlan {
        policies::view::ViewPlan::new(
            state.permissions.current(),
            &self.principal,
            &self.purpose,
            self.break_glass.is_some(),
        )
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated { principal, context } =
            Authenticated::from_request_parts(parts, state).await?;
        let endpoint = audit_endpoint(parts);
        let header_text = |name: &str| {
            parts
                .headers
                .get(name)
                // Reasons and case ids are often Chinese: accept UTF-8, not only ASCII.
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let purpose = header_text("x-purpose");
        let case_id = header_text("x-case-id").map(|c| c.chars().take(64).collect());
        let break_glass = header_text("x-break-glass");
        if let Some(purpose) = purpose
            .as_deref()
            .filter(|p| state.purposes.iter().any(|a| a == p))
        {
            tracing::Span::current().record("purpose", purpose);
        }
        let refusal = if !state
            .permissions
            .allows(&principal.roles, Permission::ReadPersonalData)
        {
            Some(ApiError::forbidden(
                "role_cannot_read",
                "your role may not read personal data",
            ))
        } else {
            match &purpose {
                None => Some(ApiError::bad_request(
                    "purpose_required",
                    format!(
                        "personal data needs a purpose of use: send X-Purpose with one of {}",
                        state.purposes.join(", ")
                    ),
                )),
                Some(p) if !state.purposes.iter().any(|allowed| allowed == p) => {
                    Some(ApiError::bad_request(
                        "purpose_unknown",
                        format!(
                            "X-Purpose is not a configured purpose; use one of {}",
                            state.purposes.join(", ")
                        ),
                    ))
                }
                Some(_) if case_id.is_some()
                    && !state
                        .permissions
                        .allows(&principal.roles, Permission::OpenCase) =>
                {
                    Some(ApiError::forbidden(
                        "case_id_not_allowed",
                        "your role may not open cases: remove X-Case-Id (a case id defers the access in the resident's report, so only case-handling roles may send one)",
                    ))
                }
                Some(_) => match &break_glass {
                    Some(_)
                        if !state
                            .permissions
                            .allows(&principal.roles, Permission::UseBreakGlass) =>
                    {
                        Some(ApiError::forbidden(
                            "break_glass_not_allowed",
                            "your role may not break the glass; remove X-Break-Glass",
                        ))
                    }
                    Some(reason) if reason.chars().count() < 4 => Some(ApiError::bad_request(
                        "break_glass_reason_required",
                        "X-Break-Glass must state the reason (at least 4 characters)",
                    )),
                    Some(_) if !state.break_glass.try_use(&principal.sub) => Some(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "break_glass_limit",
                        "too many break-glass reads in the last hour; ask a street officer or wait",
                    )),
                    _ => None,
                },
            }
        };
        if let Some(error) = refusal {
            state
                .audit_refusal(
                    &principal,
                    &context,
                    purpose.as_deref(),
                    case_id.as_deref(),
                    &endpoint,
                    &error,
                )
                .await?;
            return Err(error);
        }
        Ok(Reader {
            principal,
            context,
            purpose: purpose.unwrap_or_default(),
            case_id,
            break_glass: break_glass.map(|r| r.chars().take(200).collect()),
        })
    }
}

/// A caller allowed to publish for its own department.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub principal: Principal,
    pub context: RequestContext,
}

impl FromRequestParts<AppState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated { principal, context } =
            Authenticated::from_request_parts(parts, state).await?;
        if !state
            .permissions
            .allows(&principal.roles, Permission::IngestOwnDepartment)
            || principal.dept.is_none()
        {
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                "role_cannot_publish",
                "only a dept_publisher token with a dept claim may publish",
            );
            let endpoint = audit_endpoint(parts);
            return Err(state.refuse(&principal, &context, &endpoint, error).await);
        }
        if let Some(error) = client_certificate_refusal(&principal, parts) {
            let endpoint = audit_endpoint(parts);
            return Err(state.refuse(&principal, &context, &endpoint, error).await);
        }
        Ok(Publisher { principal, context })
    }
}

/// mTLS: a publisher whose connection carries a client certificate publishes only as the
/// certificate's department; where client certificates are required, none means no publishing.
fn client_certificate_refusal(principal: &policies::Principal, parts: &Parts) -> Option<ApiError> {
    let connection = parts.extensions.get::<crate::server::ConnectionInfo>()?;
    match &connection.client {
        None if connection.ingest_requires_client_cert => Some(ApiError::forbidden(
            "client_certificate_required",
            "publishing needs a department client certificate: use the mTLS listener",
        )),
        None => None,
        Some(identity) => match identity.department {
            None => Some(ApiError::forbidden(
                "certificate_department_unknown",
                "the client certificate does not name a department (subject OU/CN or [mtls.subjects])",
            )),
            Some(department) if principal.dept != Some(department) => Some(ApiError::forbidden(
                "certificate_department_mismatch",
                "the token's department differs from the client certificate's department",
            )),
            Some(_) => None,
        },
    }
}
