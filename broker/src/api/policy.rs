//! Policy routes: the current version, a field-by-field preview of what a role sees for a
//! purpose, and replacing a policy file.
//!
//! Guarantees (三员分立): the preview is for compliance officers and security admins and shows
//! levels, never data; only a security admin may change a policy file, the change is compiled
//! (and refused with the compiler's message if it does not compile) before it is written, takes
//! effect without restart, and is audited with the old and new versions.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use audit::Decision;
use model::{Department, RecordKind};

use policies::authz::{Permission, PolicyFiles};
use policies::view::ViewPlan;
use policies::Principal;

use super::error::{ApiError, ErrorBody};
use super::extract::Authenticated;
use super::routes::Routes;
use super::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/policy", policy_info)
        .get("/v1/policy/preview", preview)
        .put("/v1/policy/files/{name}", replace_file)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyInfo {
    /// Digest of the policy files in force.
    pub version: String,
    pub purposes: Vec<String>,
    pub files: Vec<String>,
    /// Whether policy files can be replaced through the API (a policy folder is configured).
    pub writable: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PreviewQuery {
    /// Role to preview, e.g. grid_worker.
    pub role: String,
    /// Purpose of use, e.g. routine_visit.
    pub purpose: String,
    /// For `dept_analyst`: the analyst's department (an analyst reads only its own
    /// department's data, and nothing without one); for `dept_subscriber`, the department
    /// whose sharing agreements to show.
    pub dept: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldPreview {
    pub kind: String,
    pub field: String,
    pub class: String,
    /// clear, masked or hidden.
    pub level: String,
    /// Departments whose own restriction lowers the level for their data.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lowered_by: Vec<DepartmentLevel>,
    /// Resident fields only: the level on the profile of a child under 14 (the field's level
    /// capped by the role's level for the `minor` class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepartmentLevel {
    pub department: String,
    pub level: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClassPreview {
    pub class: String,
    pub level: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepartmentPreview {
    pub department: String,
    /// Whether the role learns that the department holds a record about a resident.
    pub visible: bool,
    /// Level of the department's attributes.
    pub attributes: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub role: String,
    pub purpose: String,
    pub version: String,
    pub fields: Vec<FieldPreview>,
    pub classes: Vec<ClassPreview>,
    pub departments: Vec<DepartmentPreview>,
    /// Sharing agreements (`sharing.csv`) for this purpose — of `dept` when given: what a
    /// department's subscriptions receive, class by class. A `dept_subscriber`'s own field
    /// levels above are empty: it reads nothing but what these lines give.
    pub agreements: Vec<AgreementPreview>,
    /// Where grid workers' reports of each event type go (`routing.csv`).
    pub routing: std::collections::BTreeMap<String, Vec<String>>,
}

/// One sharing agreement line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgreementPreview {
    pub receiver: String,
    pub kind: String,
    /// An event type, or `*`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub class: String,
    pub level: String,
}

fn require(
    state: &AppState,
    caller: &Authenticated,
    permission: Permission,
) -> Result<(), ApiError> {
    if state
        .permissions
        .allows(&caller.principal.roles, permission)
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "role_cannot_manage_policy",
            "only compliance officers and security admins may see the policy; only security admins may change it",
        ))
    }
}

/// [`require`], with the refusal audited before it leaves.
async fn require_audited(
    state: &AppState,
    caller: &Authenticated,
    permission: Permission,
    endpoint: &str,
) -> Result<(), ApiError> {
    match require(state, caller, permission) {
        Ok(()) => Ok(()),
        Err(error) => Err(state
            .refuse(&caller.principal, &caller.context, endpoint, error)
            .await),
    }
}

/// The policy version in force and its files.
#[utoipa::path(get, path = "/v1/policy",
    responses((status = 200, body = PolicyInfo), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn policy_info(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<PolicyInfo>, ApiError> {
    require_audited(&state, &caller, Permission::PreviewPolicy, "/v1/policy").await?;
    let current = state.permissions.current();
    Ok(Json(PolicyInfo {
        version: current.version.clone(),
        purposes: current.purposes.clone(),
        files: PolicyFiles::names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        writable: state.permissions.dir().is_some(),
    }))
}

/// Field by field, what a role sees for a purpose.
#[utoipa::path(get, path = "/v1/policy/preview", params(PreviewQuery),
    responses((status = 200, body = Preview), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    require_audited(
        &state,
        &caller,
        Permission::PreviewPolicy,
        "/v1/policy/preview",
    )
    .await?;
    let policy = state.permissions.current();
    if !policies::ROLES.contains(&query.role.as_str()) {
        return Err(ApiError::bad_request(
            "role_unknown",
            format!("role must be one of {}", policies::ROLES.join(", ")),
        ));
    }
    if !policy.purposes.contains(&query.purpose) {
        return Err(ApiError::bad_request(
            "purpose_unknown",
            format!("purpose must be one of {}", policy.purposes.join(", ")),
        ));
    }
    let dept = match query.dept.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(code) => Some(Department::parse(code).map_err(|_| {
            ApiError::bad_request(
                "department_unknown",
                "dept must be a department code such as minzheng",
            )
        })?),
    };
    let principal = Principal {
        sub: "preview".to_owned(),
        name: "preview".to_owned(),
        roles: vec![query.role.clone()],
        jurisdiction: Vec::new(),
        dept,
    };
    let plan = ViewPlan::new(policy.clone(), &principal, &query.purpose, false);
    let mut fields = Vec::new();
    for (kind, field, class) in policy.tables.fields() {
        let kind_value = RecordKind::parse(kind).unwrap_or(RecordKind::Resident);
        let level = plan.field_level(kind_value, field);
        let lowered_by = Department::ALL
            .iter()
            .filter_map(|d| {
                let owner_level = plan.level(class, *d);
                (owner_level < level).then(|| DepartmentLevel {
                    department: d.code().to_owned(),
                    level: owner_level.as_str().to_owned(),
                })
            })
            .collect();
        let minor = (kind_value == RecordKind::Resident).then(|| {
            plan.minor_field_level(kind_value, field)
                .as_str()
                .to_owned()
        });
        fields.push(FieldPreview {
            kind: kind.to_owned(),
            field: field.to_owned(),
            class: class.to_owned(),
            level: level.as_str().to_owned(),
            lowered_by,
            minor,
        });
    }
    let classes = policies::CLASSES
        .iter()
        .map(|class| ClassPreview {
            class: (*class).to_owned(),
            level: policy
                .level(&principal.roles, &query.purpose, class)
                .as_str()
                .to_owned(),
        })
        .collect();
    let departments = Department::ALL
        .iter()
        .map(|d| DepartmentPreview {
            department: d.code().to_owned(),
            visible: plan.department_visible(*d),
            attributes: plan
                .level(policy.tables.attribute_class(*d), *d)
                .as_str()
                .to_owned(),
        })
        .collect();
    let agreements = policy
        .exchange
        .lines()
        .iter()
        .filter(|line| line.purpose == query.purpose && dept.is_none_or(|d| line.receiver == d))
        .map(|line| AgreementPreview {
            receiver: line.receiver.code().to_owned(),
            kind: line.kind.as_str().to_owned(),
            event_type: line.event_type.clone(),
            class: line.class.clone(),
            level: line.level.as_str().to_owned(),
        })
        .collect();
    let routing = policy
        .exchange
        .routes()
        .iter()
        .map(|(event_type, departments)| {
            (
                event_type.clone(),
                departments.iter().map(|d| d.code().to_owned()).collect(),
            )
        })
        .collect();
    Ok(Json(Preview {
        role: query.role,
        purpose: query.purpose,
        version: policy.version.clone(),
        fields,
        classes,
        departments,
        agreements,
        routing,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyChanged {
    pub previous_version: String,
    pub version: String,
}

/// Replace one policy file (security admin only); effective immediately.
#[utoipa::path(put, path = "/v1/policy/files/{name}",
    params(("name" = String, Path, description = "policy.csv, model.conf, field_classes.csv, tag_classes.csv, department_classes.csv, owner_restrictions.csv, masked_labels.csv, sharing.csv or routing.csv")),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = PolicyChanged), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace_file(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(name): Path<String>,
    body: String,
) -> Result<Json<PolicyChanged>, ApiError> {
    require_audited(
        &state,
        &caller,
        Permission::WritePolicy,
        "/v1/policy/files/{name}",
    )
    .await?;
    let Some(dir) = state.permissions.dir().map(std::path::Path::to_path_buf) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "policy_dir_not_configured",
            "the broker runs on the built-in policy; set policy_dir in the configuration to change it",
        ));
    };
    if !PolicyFiles::names().contains(&name.as_str()) {
        return Err(ApiError::bad_request(
            "policy_file_unknown",
            format!("policy files are {}", PolicyFiles::names().join(", ")),
        ));
    }
    state.permissions.validate_replacement(&name, &body).await?;
    let previous_version = state.permissions.version();
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "policy_change",
        "/v1/policy/files/{name}",
        Decision::Allow,
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    record.outcome = format!(
        "file={name} from={previous_version} content=sha256:{}",
        hex::encode(&digest.as_ref()[..8])
    );
    let path = dir.join(&name);
    let temp = dir.join(format!(".{name}.tmp"));
    let permissions = state.permissions.clone();
    let version = state
        .audited_write(record, || async move {
            std::fs::write(&temp, body.as_bytes())
                .and_then(|_| std::fs::rename(&temp, &path))
                .map_err(|err| ApiError::internal("policy_write_failed", &err))?;
            permissions
                .reload()
                .await
                .map_err(|err| ApiError::internal("policy_reload_failed", &err))?;
            Ok(permissions.version())
        })
        .await?;
    Ok(Json(PolicyChanged {
        previous_version,
        version,
    }))
}
