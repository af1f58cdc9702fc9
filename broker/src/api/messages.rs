//! Error messages in the reader's language: English (the call site's text) or Chinese
//! (zh-CN), chosen by `Accept-Language`.
//!
//! Guarantees:
//! - The `code` and the HTTP status of an answer never depend on the language; only
//!   `message` does (and `Content-Language` says which one it is).
//! - Every code the broker can answer with has a Chinese message in [`CATALOG`] (a test scans
//!   the source for the codes and fails on one without, or on an entry nobody uses).
//! - Chinese messages are fixed text per code: they never carry personal data, nor any value
//!   of the request. Where the English message names a detail (a line, a claim, a limit), the
//!   Chinese one says what kind of problem it is and what to do.
//! - Every error response leaves the router as `{"error":{"code","message"}}`, including the
//!   rejections of axum's own extractors (a body that is not JSON, a malformed query string)
//!   and a method a route does not serve.
//! - Per-record rejections of ingest receipts (`rejected[].message`) and of the quarantine
//!   list (`rejects[].message`, and the message column of its workbook) are translated by
//!   their code the same way; every reason code the model, the engine, the broker and the
//!   connectors give a rejected record has a Chinese message (the same test scans for them).

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};

/// The language an answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    /// Simplified Chinese (zh-CN).
    Chinese,
}

impl Language {
    /// The language a request prefers, by its `Accept-Language` header (q-values honoured):
    /// Chinese for `zh`, `zh-CN`, `zh-Hans`, `zh-SG` (and their longer forms) when they weigh
    /// more than English; English otherwise, also when the header is absent or unreadable.
    /// On equal weight the language listed first wins.
    pub fn preferred(headers: &HeaderMap) -> Language {
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
            .map_or(Language::English, Language::from_accept_language)
    }

    pub fn from_accept_language(header: &str) -> Language {
        // (weight, position) of the best entry naming each language.
        let mut chinese: Option<(f32, usize)> = None;
        let mut english: Option<(f32, usize)> = None;
        for (position, entry) in header.split(',').enumerate().take(32) {
            let mut parts = entry.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut weight = 1.0f32;
            for parameter in parts {
                if let Some((name, value)) = parameter.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        weight = value.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            if weight.is_nan() || weight <= 0.0 {
                continue;
            }
            let slot = if is_simplified_chinese(&tag) {
                &mut chinese
            } else if tag == "en" || tag.starts_with("en-") || tag == "*" {
                &mut english
            } else {
                continue;
            };
            if slot.is_none_or(|(best, _)| weight > best) {
                *slot = Some((weight, position));
            }
        }
        match (chinese, english) {
            (Some(_), None) => Language::Chinese,
            (Some((zh_weight, zh_position)), Some((en_weight, en_position)))
                if zh_weight > en_weight
                    || (zh_weight == en_weight && zh_position < en_position) =>
            {
                Language::Chinese
            }
            _ => Language::English,
        }
    }

    /// The `Content-Language` of an answer written in this language.
    pub fn content_language(self) -> HeaderValue {
        match self {
            Language::English => HeaderValue::from_static("en"),
            Language::Chinese => HeaderValue::from_static("zh-CN"),
        }
    }
}

fn is_simplified_chinese(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    if subtags.next() != Some("zh") {
        return false;
    }
    match subtags.next() {
        None => true,
        Some(region_or_script) => matches!(region_or_script, "cn" | "hans" | "sg"),
    }
}

/// The Chinese message for `code`, if the catalog has one.
pub fn chinese(code: &str) -> Option<&'static str> {
    CATALOG
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, message)| *message)
}

/// The message of a rejected record (in a receipt or in quarantine) in `language`: in
/// Chinese the catalog's text for its `code`; otherwise, and for a code the catalog does not
/// know (a department's own, filed through `POST /v1/ingest/{department}/rejects`), the
/// stored `message`.
pub fn rejection_message<'a>(code: &str, message: &'a str, language: Language) -> &'a str {
    match language {
        Language::Chinese => chinese(code).unwrap_or(message),
        Language::English => message,
    }
}

/// The middleware that writes error messages (and ingest receipts' per-record messages) in
/// the language the request prefers, and gives a bare rejection of axum's extractors the
/// API's error shape.
pub async fn localize(request: Request, next: Next) -> Response {
    let language = Language::preferred(request.headers());
    let method = request.method().clone();
    let receipt_route = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| RECEIPT_ROUTES.contains(&(method.as_str(), path.as_str())));
    let response = next.run(request).await;
    match response.extensions().get::<ErrorCode>().copied() {
        Some(code) => in_language(response, code.0, language),
        None if is_bare_error(&response) => {
            let response = wrap_bare_error(response).await;
            match response.extensions().get::<ErrorCode>().copied() {
                Some(code) => in_language(response, code.0, language),
                None => response,
            }
        }
        None if receipt_route
            && language == Language::Chinese
            && response.status().is_success() =>
        {
            translate_receipt(response).await
        }
        None => response,
    }
}

/// Routes (method, template) whose answer is an ingest receipt with per-record rejections.
/// The quarantine list (`GET …/rejects`) translates its own entries.
const RECEIPT_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/ingest/{department}"),
    ("GET", "/v1/ingest/{department}/batches/{batch_id}"),
    ("POST", "/v1/ingest/{department}/rejects"),
];

/// The most a receipt the layer rewrites may weigh (a receipt of 100,000 rejections).
const RECEIPT_LIMIT: usize = 256 * 1024 * 1024;

/// An error answer that did not come from an [`ApiError`]: axum's own rejections (plain
/// text) and its empty 405.
fn is_bare_error(response: &Response) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    !json
}

/// Gives an axum rejection the API's shape and a stable code; its text (which names what
/// did not parse, never a value) stays the English message.
async fn wrap_bare_error(response: Response) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let error = if status == StatusCode::METHOD_NOT_ALLOWED {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not serve this method; see /openapi.json",
        )
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is too large: {text}"),
        )
    } else if text.contains("query string") {
        ApiError::new(
            status,
            "query_invalid",
            format!("the query string does not parse: {text}"),
        )
    } else if text.contains("JSON") || text.contains("Content-Type") || text.contains("body") {
        ApiError::new(
            status,
            "body_invalid",
            format!("the body must be JSON in the shape /openapi.json gives: {text}"),
        )
    } else if status.is_client_error() {
        ApiError::new(
            status,
            "request_invalid",
            format!("the request does not parse: {text}"),
        )
    } else {
        // A server error without our shape: keep the status, never the text.
        ApiError::internal("internal_error", &text)
    };
    let mut wrapped = error.into_response();
    *wrapped.status_mut() = status;
    for name in [header::RETRY_AFTER, header::ALLOW] {
        if let Some(value) = parts.headers.get(&name) {
            wrapped.headers_mut().insert(name, value.clone());
        }
    }
    wrapped
}

/// Rewrites an [`ApiError`] answer's message in `language` (English answers are left as the
/// call site wrote them).
fn in_language(mut response: Response, code: &'static str, language: Language) -> Response {
    response.headers_mut().insert(
        header::CONTENT_LANGUAGE,
        Language::English.content_language(),
    );
    if language != Language::Chinese {
        return response;
    }
    let Some(message) = chinese(code) else {
        return response;
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    };
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_LANGUAGE, language.content_language());
    Response::from_parts(parts, Body::from(bytes))
}

/// Writes the message of each rejected record of a receipt in Chinese, by its code; a code
/// the catalog does not know (a department's own, filed with `/v1/rejects`) keeps its text.
async fn translate_receipt(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, RECEIPT_LIMIT).await {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::error!(cause = %err, "a receipt could not be read for translation");
            return ApiError::internal("task_failed", &err).into_response();
        }
    };
    let Ok(mut receipt) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(rejected) = receipt
        .get_mut("rejected")
        .and_then(serde_json::Value::as_array_mut)
    {
        for rejection in rejected {
            let code = rejection.get("code").and_then(serde_json::Value::as_str);
            if let Some(message) = code.and_then(chinese) {
                rejection["message"] = serde_json::Value::from(message);
            }
        }
    }
    let Ok(translated) = serde_json::to_vec(&receipt) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_LANGUAGE,
        Language::Chinese.content_language(),
    );
    Response::from_parts(parts, Body::from(translated))
}

/// Code -> Chinese message, written for a civil servant: what went wrong and what to do.
/// Sorted by code.
pub const CATALOG: &[(&str, &str)] = &[
    ("address_missing", "记录缺少地址：请填写标准地址后重新报送。"),
    ("address_without_compound", "地址中没有小区或楼栋名称：请填写小区或楼栋的标准地址（如“青松园5号楼”）。"),
    ("attributes_too_large", "记录的附加属性（attributes）内容过多：请精简后重新报送。"),
    ("audit_read_failed", "审计日志读取失败：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("audit_unavailable", "审计日志当前无法写入，本次请求未予办理（不提供个人信息）：请待 /readyz 显示就绪后重试。"),
    ("backup_dir_not_configured", "未配置备份目录：请系统管理员在配置中设置备份目录后再执行备份。"),
    ("backup_store_external", "数据存储在 PostgreSQL 数据库中：请用数据库自身的工具（pg_basebackup 与 WAL 归档）备份；本系统的备份只复制内嵌存储。"),
    ("backup_failed", "备份未能完成：请联系系统运维人员查看日志。"),
    ("batch_malformed", "批次无法解析：请求体应为 UTF-8 编码的 JSON 数组或每行一条记录的 NDJSON；请检查格式后重新报送（具体位置见英文消息）。"),
    ("body_invalid", "请求体格式不正确：请按接口文档（/docs）提交 JSON 请求体，并使用 Content-Type: application/json。"),
    ("body_timeout", "请求体未在规定时间内传完：请分成较小的批次，或在网络较好时重新报送。"),
    ("break_glass_limit", "近一小时内紧急调阅（破窗）次数已达上限：请稍后再试，或联系安全管理员。"),
    ("break_glass_not_allowed", "您的角色不能使用紧急调阅（破窗）：如确有紧急需要，请联系有权限的人员。"),
    ("break_glass_reason_required", "紧急调阅（破窗）必须填写真实、具体的理由：请补充理由后重试。"),
    ("case_id_not_allowed", "您的角色不能使用案件编号（X-Case-Id）：请去掉该请求头，或由有权限的人员办理。"),
    ("cell_error", "表格或数据库中有单元格无法读取（如 #N/A、#REF! 等错误值，或无法识别的取值）：请在源数据中更正该单元格后重新报送。"),
    ("cell_precision_lost", "单元格中的数字超过 15 位，电子表格无法精确保存（身份证号码等会丢失末几位）：请把该列设为文本格式后重新导出。"),
    ("certificate_department_mismatch", "客户端证书所属部门与令牌中的部门不一致：请使用本部门的证书和令牌。"),
    ("certificate_department_unknown", "客户端证书未标明所属部门：请联系安全管理员为本部门签发证书。"),
    ("client_certificate_required", "报送数据需要本部门的客户端证书（双向 TLS）：请配置证书后重试。"),
    ("country_missing", "缺少国籍或地区：请填写国籍或地区代码。"),
    ("country_unknown", "国籍或地区代码无法识别：请使用标准的国家或地区代码。"),
    ("csv_field_count", "该行的列数与表头不一致：请检查该行是否多了或少了逗号，内容中的逗号须加英文引号。"),
    ("csv_no_header", "文件没有表头行：请在第一行写明各列名称后重新报送。"),
    ("csv_syntax", "该行不是合法的 CSV 格式（如引号不配对）：请检查该行后重新报送。"),
    ("cursor_invalid", "翻页游标无效：请不带游标重新查询。"),
    ("cursor_mismatch", "翻页游标属于另一次查询：请使用相同的查询条件，或不带游标重新查询。"),
    ("date_format", "日期格式不正确：请使用 YYYY-MM-DD 格式。"),
    ("date_missing", "缺少日期：请填写日期。"),
    ("date_out_of_range", "日期超出合理范围：请核对日期。"),
    ("decision_invalid", "审核结论无效：请按接口文档填写审核结论。"),
    ("defer_days_invalid", "延期天数超出允许范围：请填写配置允许范围内的天数。"),
    ("delivery_host_not_allowed", "推送地址的主机不在允许名单内：请使用已登记的接收地址，或联系安全管理员。"),
    ("delivery_unserialisable", "推送内容无法生成：请联系系统运维人员查看日志。"),
    ("department_mismatch", "数据发布方只能为本部门报送数据：请使用本部门的令牌，或改为报送本部门的数据。"),
    ("department_unknown", "部门代码无法识别：请使用 gongan、minzheng、weijian、sifa、zhujian、chengguan、yingji 或 wangge。"),
    ("division_format", "行政区划代码格式不正确：请填写数字形式的标准行政区划代码。"),
    ("division_length", "行政区划代码位数不正确：请核对代码位数。"),
    ("division_missing", "缺少行政区划代码：请填写行政区划代码。"),
    ("document_country_mismatch", "证件号码与签发国家或地区不一致：请核对证件信息。"),
    ("document_country_missing", "缺少证件签发国家或地区：请补充后重新报送。"),
    ("document_country_unknown", "证件签发国家或地区代码无法识别：请使用标准代码。"),
    ("document_number_format", "证件号码格式不正确：请核对证件号码。"),
    ("document_number_length", "证件号码长度不正确：请核对证件号码。"),
    ("document_number_missing", "缺少证件号码：请补充后重新报送。"),
    ("document_number_nationality", "证件号码与国籍不一致：请核对证件信息。"),
    ("document_type_missing", "缺少证件类型：请补充后重新报送。"),
    ("document_type_unknown", "证件类型无法识别：请使用接口文档列出的证件类型。"),
    ("event_not_managed", "该事件为部门自有记录，不能在平台上流转：只有通过上报或走访登记的事件才能流转。"),
    ("event_text_missing", "事件缺少文字描述：请填写事件描述。"),
    ("event_type_missing", "缺少事件类型：请填写事件类型代码。"),
    ("export_failed", "导出未能完成：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("field_control_characters", "字段中含有控制字符：请删除不可见字符后重新提交。"),
    ("field_missing", "缺少必填字段：请补充后重新提交（字段名见英文消息）。"),
    ("field_too_long", "字段内容过长：请精简后重新提交。"),
    ("field_type", "字段的数据类型不正确：请按接口文档填写（如文字、数字）。"),
    ("field_unknown", "含有无法识别的字段：请删除或更正该字段（字段名见英文消息）。"),
    ("file_encoding", "文件的文字编码无法识别：请另存为 UTF-8 或 GBK（GB18030）编码后重新报送。"),
    ("file_not_regular", "该目录项不是普通文件（如链接、快捷方式或文件夹），未予读取：请把文件本身放入报送目录。"),
    ("file_too_large", "文件超过允许的大小，未予读取：请拆分成较小的文件，或请管理员调整大小上限。"),
    ("file_unreadable", "文件不是可读取的电子表格：请检查文件是否损坏，或另存为 .xlsx 格式后重新报送。"),
    ("filter_invalid", "筛选条件格式不正确：请使用小写英文字母和下划线组成的代码。"),
    ("filter_not_supported", "该筛选条件不适用于此查询：请改用事件或组织的查询接口。"),
    ("format_invalid", "格式参数（format）只能是默认格式（审计导出为 ndjson，其他接口为 json）或 xlsx（Excel 表格）：请去掉该参数或填写 xlsx。"),
    ("format_unknown", "格式参数无法识别：请按接口文档选择格式。"),
    ("from_invalid", "起始时间格式不正确：请使用 RFC 3339 格式，如 2026-11-01T08:00:00+08:00。"),
    ("gender_invalid", "性别填写不正确：请使用接口文档规定的性别代码。"),
    ("grid_invalid", "网格编码无效：请填写本辖区内 15 位的网格编码。"),
    ("grid_missing", "缺少网格编码：请填写网格编码。"),
    ("grid_outside_jurisdiction", "记录所在网格不在当前令牌的管辖范围内：请使用该区域的令牌报送，或填写正确的网格。"),
    ("grid_unresolved", "记录未填写网格，且无法从地址推断：请填写网格，或先报送该地址的房屋信息。"),
    ("grids_invalid", "网格列表无效：请填写本辖区内的网格编码。"),
    ("history_full", "该事件流转次数已达上限：请另行登记新事件。"),
    ("id_match_cannot_split", "该记录带有有效的身份证号码，不能从该人员的档案中拆分：请在源系统中更正身份证号码。"),
    ("id_number_birth_date", "身份证号码中的出生日期无效：请核对身份证号码。"),
    ("id_number_checksum", "身份证号码校验位不正确：请核对身份证号码。"),
    ("id_number_format", "身份证号码格式不正确：请核对身份证号码。"),
    ("id_number_issuing_province", "证件号码中的签发省份无效：请核对证件号码。"),
    ("id_number_length", "身份证号码位数不正确：应为 18 位（或旧式 15 位）。"),
    ("id_number_missing", "缺少身份证号码：请补充后重新报送。"),
    ("id_number_nationality", "证件号码中的国籍信息无效：请核对证件号码。"),
    ("id_number_permit_region", "居住证或通行证号码中的地区代码无效：请核对证件号码。"),
    ("id_number_region", "身份证号码中的地区代码无效：请核对身份证号码。"),
    ("identity_conflict", "该身份证号码对应人员的姓名或出生日期与户籍信息不一致，记录已暂存待核：请在源系统中核对身份证号码。"),
    ("integrity_error", "加密存储的数据校验失败（可能被篡改或移动）：请联系系统运维人员。"),
    ("internal_error", "系统内部错误，本次未能办理：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("json_syntax", "该条记录不是合法的 JSON：请检查格式后重新报送。"),
    ("key_error", "密钥处理失败：请联系系统运维人员。"),
    ("kind_missing", "记录缺少类型（kind）：请填写 resident、house、event 或 organization。"),
    ("kind_unknown", "记录类型（kind）无法识别：请使用 resident、house、event 或 organization。"),
    ("kinds_invalid", "订阅的记录类型无效：请使用 resident、house、event 或 organization。"),
    ("limit_invalid", "每页条数超出允许范围：请按接口文档填写。"),
    ("days_invalid", "天数应在 1 到 90 之间。"),
    ("mapping_bad_date", "按映射规则转换时日期无法识别：请核对该列的日期格式。"),
    ("mapping_bad_value", "按映射规则转换时取值无法识别：请核对该列的内容。"),
    ("mapping_missing_column", "数据中缺少映射规则要求的列：请补充该列，或请管理员调整映射规则。"),
    ("mapping_missing_value", "映射规则要求的列为空：请补充内容后重新报送。"),
    ("mapping_unknown_code", "该列中的分类代码不在映射规则中：请核对取值，或请管理员补充映射规则。"),
    ("method_not_allowed", "该接口不支持此请求方法：请查阅接口文档（/docs）。"),
    ("no_sharing_agreement", "没有覆盖此次访问的数据共享协议：请联系安全管理员。"),
    ("not_found", "没有找到您可查看的该记录：请核对编号；辖区外的记录同样显示为不存在。"),
    ("not_linked", "该记录已是独立的档案，无需拆分。"),
    ("occurred_at_in_future", "发生时间晚于当前时间：请核对发生时间。"),
    ("organization_unidentified", "组织缺少可识别的信息（如名称或统一社会信用代码）：请补充后重新报送。"),
    ("party_invalid", "当事人须以统一居民编号（r_ 开头）指定，不能使用身份证号码：请先检索该人员，再使用检索结果中的编号。"),
    ("party_unknown", "指定的当事人不存在或不在您的查看范围内：请使用检索或档案中给出的统一编号。"),
    ("payload_too_large", "请求体超过大小上限：请拆分成较小的批次后重新提交。"),
    ("phone_area_code_missing", "固定电话缺少区号：请补充区号。"),
    ("phone_format", "电话号码格式不正确：请核对电话号码。"),
    ("phone_length", "电话号码位数不正确：请核对电话号码。"),
    ("phone_missing", "缺少电话号码：请补充后重新提交。"),
    ("policy_dir_not_configured", "未配置策略目录，无法在线修改策略：请联系系统管理员。"),
    ("policy_file_unknown", "策略文件名无法识别：请使用接口文档列出的策略文件。"),
    ("policy_invalid", "策略文件无法通过校验，未予更改：请按英文消息修正后重新提交。"),
    ("policy_reload_failed", "策略重新加载失败，仍使用原策略：请联系系统运维人员。"),
    ("policy_write_failed", "策略文件写入失败，未予更改：请联系系统运维人员。"),
    ("proof_target_invalid", "请在 seq 和 request_id 中且只填写一项。"),
    ("purpose_required", "查询个人信息必须说明用途：请在请求头 X-Purpose 中填写已配置的用途。"),
    ("purpose_unknown", "用途（X-Purpose）不在已配置的用途清单中：请选择清单中的用途。"),
    ("query_invalid", "查询参数不正确（参数未知、重复或格式错误）：请按接口文档（/docs）填写查询参数。"),
    ("query_string_invalid", "查询参数不正确：请按接口文档填写（如状态、条数）。"),
    ("query_too_long", "查询内容过长：请缩短检索词。"),
    ("range_invalid", "时间范围不正确：起始时间须早于结束时间。"),
    ("range_too_large", "符合条件的记录过多：请缩小时间范围。"),
    ("rate_limited", "请求过于频繁：请按 Retry-After 提示的秒数等待后重试。"),
    ("record_not_found", "没有找到该记录：请核对编号。"),
    ("record_not_object", "每条记录必须是一个 JSON 对象：请检查该条记录。"),
    ("record_too_large", "单条记录过大：请精简后重新报送。"),
    ("reject_code_invalid", "退回记录的代码格式不正确：应为小写英文字母和下划线组成的代码。"),
    ("report_not_stored", "上报未能保存：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("request_invalid", "请求无法解析：请按接口文档（/docs）检查请求路径和参数。"),
    ("resident_invalid", "居民标识不正确：请填写统一居民编号（r_ 开头）或有效的身份证号码。"),
    ("resident_unidentified", "居民记录缺少可识别的身份信息（如姓名和证件号码）：请补充后重新报送。"),
    ("review_already_decided", "该审核已有结论，无需重复处理。"),
    ("role_cannot_assign", "您的角色不能分派此事项：请联系有权限的人员。"),
    ("role_cannot_manage_policy", "您的角色不能管理访问策略（职责分离）：请联系安全管理员。"),
    ("role_cannot_operate", "只有系统管理员可以查看运行指标：请联系系统管理员。"),
    ("role_cannot_publish", "报送数据需要部门数据发布员角色及部门信息：请使用本部门发布员的令牌。"),
    ("role_cannot_read", "您的角色不能查看个人信息：如工作需要，请向管理员申请相应角色。"),
    ("role_cannot_read_audit", "您的角色不能查看审计日志（职责分离）：请联系审计人员。"),
    ("role_cannot_read_statistics", "您的角色不能查看统计数据：请联系有权限的人员。"),
    ("role_cannot_report", "您的角色不能上报事件：请联系有权限的人员。"),
    ("role_cannot_resolve", "您的角色不能处理身份合并审核：请联系有权限的人员。"),
    ("role_cannot_subscribe", "您的角色不能订阅数据：请使用本部门有订阅权限的令牌。"),
    ("role_unknown", "角色名称无法识别：请使用接口文档列出的角色。"),
    ("route_not_found", "没有这个接口地址：请查阅接口文档（/docs）。"),
    ("search_failed", "检索未能完成：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("search_index_building", "系统启动后正在建立检索索引：请稍后重试（按编号查看档案不受影响）。"),
    ("search_index_lagging", "检索索引落后于数据且未在更新：检索结果可能不全，请联系系统运维人员。"),
    ("sheet_missing", "工作簿中没有配置所指的工作表：请核对工作表名称，或请管理员调整连接器配置。"),
    ("sheet_no_header", "工作表在配置的位置没有表头行：请核对表头所在行，或请管理员调整连接器配置。"),
    ("shutting_down", "系统正在关闭：请稍后重试。"),
    ("sort_invalid", "排序方式不正确：请使用 relevance（事件还可使用 time）。"),
    ("state_unknown", "事件状态无法识别：请使用接口文档列出的状态。"),
    ("statistics_unreadable", "统计数据读取失败：请联系系统运维人员。"),
    ("store_error", "数据存储出现故障，本次未能办理：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("store_unavailable", "数据存储当前无法连接或繁忙，本次未办理：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("task_failed", "后台任务未能完成：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("threshold_invalid", "阈值不正确：阈值至少为 1。"),
    ("time_invalid", "时间格式不正确：请使用 RFC 3339 或 YYYY-MM-DD 格式。"),
    ("to_invalid", "结束时间格式不正确：请使用 RFC 3339 格式，如 2026-11-01T08:00:00+08:00。"),
    ("too_many_documents", "记录所附证件过多：请精简后重新报送。"),
    ("too_many_parties", "上报的当事人过多：其余人员请写在事件描述中。"),
    ("too_many_records", "一个批次的记录条数超过上限：请拆分成较小的批次后重新报送。"),
    ("too_many_subscriptions", "本部门的订阅数已达上限：请先删除不再需要的订阅。"),
    ("transition_conflict", "该事件已被他人处理，状态已变化：请刷新后重试。"),
    ("transition_invalid", "事件不能从当前状态转到所请求的状态：请按事件流程操作。"),
    ("transition_not_allowed", "您的角色不能将事件转到该状态：请联系有权限的人员。"),
    ("transition_not_stored", "事件状态变更未能保存：请稍后重试；如持续出现，请联系系统运维人员。"),
    ("tree_size_invalid", "tree_size 不正确：应大于 seq，且不超过审计日志的条数。"),
    ("type_invalid", "事件类型代码格式不正确：请使用小写英文字母和下划线组成的代码（如 dispute）。"),
    ("types_invalid", "订阅的事件类型不正确：请使用小写英文字母和下划线组成的代码。"),
    ("unauthenticated", "身份认证失败：令牌缺失、无效、已过期，或缺少必要的信息（角色、辖区、部门）。请重新登录获取令牌。"),
    ("url_invalid", "推送地址无效：请填写完整、合法的地址。"),
    ("url_not_https", "推送地址必须使用 https：请更正后重试。"),
    ("uscc_character", "统一社会信用代码含有无效字符：请核对代码。"),
    ("uscc_check", "统一社会信用代码校验位不正确：请核对代码。"),
    ("uscc_length", "统一社会信用代码应为 18 位：请核对代码。"),
    ("uscc_structure", "统一社会信用代码结构不正确：请核对代码。"),
    ("version_conflict", "记录版本不高于已存版本，未予更新：请使用更高的版本号重新报送。"),
    ("version_format", "版本号格式不正确：请按接口文档填写版本号。"),
    ("version_in_future", "版本时间晚于当前时间：请核对版本号。"),
    ("version_missing", "记录缺少版本号：请补充后重新报送。"),
    ("work_hours_invalid", "工作时间格式不正确：请使用 HH:MM 格式，如 08:00。"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    #[test]
    fn accept_language_chooses_chinese_only_when_it_is_preferred() {
        for header in [
            "zh",
            "zh-CN",
            "zh-cn",
            "zh-Hans",
            "zh-Hans-CN",
            "zh-CN,zh;q=0.9,en;q=0.8",
            "en;q=0.5, zh;q=0.9",
            "fr, zh;q=0.3",
            "zh-SG",
        ] {
            assert_eq!(
                Language::from_accept_language(header),
                Language::Chinese,
                "{header}"
            );
        }
        for header in [
            "",
            "en",
            "en-US",
            "*",
            "en, zh",
            "zh;q=0.4, en;q=0.5",
            "zh;q=0",
            "zh-TW",
            "zh-Hant",
            "fr",
            "zh;q=abc",
            "garbage;;;,,",
        ] {
            assert_eq!(
                Language::from_accept_language(header),
                Language::English,
                "{header}"
            );
        }
        assert_eq!(Language::preferred(&HeaderMap::new()), Language::English);
    }

    /// The workspace's root (the broker crate is one of its members).
    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the broker crate lives in the workspace")
            .to_path_buf()
    }

    /// The Rust files under `dir`, without those that are only tests (`tests.rs`,
    /// `*_tests.rs`: their literals are fixtures, not answers).
    fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{dir:?}: {err}"));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let test_only = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s == "tests" || s.ends_with("_tests"));
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") && !test_only {
                into.push(path);
            }
        }
    }

    /// The file's text without its unit tests (their literals are fixtures, not answers).
    fn without_tests(text: &str) -> &str {
        match text.find("#[cfg(test)]\nmod tests") {
            Some(end) => &text[..end],
            None => text,
        }
    }

    /// The `"snake_case"` literals in `text`.
    fn snake_literals(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('"') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('"') else { break };
            let literal = &after[..end];
            let snake = literal.starts_with(|c: char| c.is_ascii_lowercase())
                && literal
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !literal.ends_with('_')
                && !literal.contains("__");
            if snake {
                found.push(literal.to_owned());
            }
            rest = &after[end + 1..];
        }
        found
    }

    /// The arguments of the call whose `(` is at `open`, split at top-level commas (string
    /// literals and nested brackets respected), and where the call ends.
    fn call_arguments(text: &str, open: usize) -> Vec<&str> {
        let bytes = text.as_bytes();
        let (mut depth, mut start, mut i) = (0usize, open + 1, open);
        let mut arguments = Vec::new();
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        arguments.push(&text[start..i]);
                        return arguments;
                    }
                }
                b',' if depth == 1 => {
                    arguments.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        arguments
    }

    /// The text of the `{…}` block that opens at or after `from`.
    fn block(text: &str, from: usize) -> &str {
        let Some(open) = text[from..].find('{').map(|o| from + o) else {
            return "";
        };
        let mut depth = 0usize;
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &text[open..open + i];
                    }
                }
                _ => {}
            }
        }
        &text[open..]
    }

    /// The literals a block yields as match arm values (`=> "code"`).
    fn arm_values(block: &str) -> Vec<String> {
        block
            .split("=>")
            .skip(1)
            .filter_map(|arm| {
                let arm = arm.trim_start();
                arm.strip_prefix('"')
                    .and_then(|a| a.split('"').next())
                    .map(str::to_owned)
            })
            .filter(|code| !snake_literals(&format!("\"{code}\"")).is_empty())
            .collect()
    }

    fn is_identifier(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// The `const NAME: &str = "snake_case";` constants of `texts`, by name.
    fn string_constants(texts: &[(String, bool)]) -> Vec<(String, String)> {
        let mut constants = Vec::new();
        for (text, _) in texts {
            for (at, _) in text.match_indices("const ") {
                let line = text[at..].lines().next().unwrap_or("");
                let name: String = line[6..]
                    .chars()
                    .take_while(|c| is_identifier(*c))
                    .collect();
                let Some(value) = line.split_once("&str = ").map(|(_, v)| v) else {
                    continue;
                };
                if let Some(literal) = snake_literals(value).into_iter().next() {
                    constants.push((name, literal));
                }
            }
        }
        constants
    }

    /// Every code in `files`: (1) the code argument of a call to a function or closure with a
    /// `code: &'static str` parameter (and of `extra` functions, whose `code` is a `&str`),
    /// `ApiError::new` and `RecordError::new` by name; (2) the value of a `code:` field, a
    /// literal or a `&str` constant; (3) the arms of `let code = match` and of `fn code` in
    /// `impl ApiProblem` blocks; (4) the code of an `Err(("code", message))` of a function
    /// that fails with a `(&'static str, String)` (a connector's unreadable cell).
    fn codes_in(files: &[PathBuf], extra: &[(&str, usize)]) -> BTreeSet<String> {
        let model = workspace().join("model");
        let texts: Vec<(String, bool)> = files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
                (without_tests(&text).to_owned(), f.starts_with(&model))
            })
            .collect();
        let constants = string_constants(&texts);
        // Functions and closures taking a code, and the position of that parameter.
        let mut takes_code: Vec<(String, usize)> =
            extra.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect();
        takes_code.push(("ApiError::new".to_owned(), 1));
        takes_code.push(("RecordError::new".to_owned(), 0));
        for (text, _) in &texts {
            for (at, _) in text.match_indices("fn ") {
                let name: String = text[at + 3..]
                    .chars()
                    .take_while(|c| is_identifier(*c))
                    .collect();
                let Some(open) = text[at..].find('(').map(|o| at + o) else {
                    continue;
                };
                let parameters = call_arguments(text, open);
                // A method's call does not pass `self` in the parentheses.
                let receiver = parameters
                    .first()
                    .is_some_and(|p| matches!(p.trim(), "self" | "&self" | "&mut self"));
                let position = parameters
                    .iter()
                    .position(|p| {
                        p.trim()
                            .strip_prefix("code:")
                            .is_some_and(|t| t.trim() == "&'static str")
                    })
                    .map(|p| p - usize::from(receiver));
                if let (Some(position), false) = (position, name == "new") {
                    takes_code.push((name, position));
                }
            }
            for (at, _) in text.match_indices("let ") {
                let line = text[at..].lines().next().unwrap_or("");
                let name: String = line[4..]
                    .chars()
                    .take_while(|c| is_identifier(*c))
                    .collect();
                if line.contains("= |code:") || line.contains("= |code,") {
                    takes_code.push((name, 0));
                }
            }
        }
        let mut codes = BTreeSet::new();
        for (text, in_model) in &texts {
            for (name, position) in &takes_code {
                for (at, _) in text.match_indices(&format!("{name}(")) {
                    let before = text[..at].chars().next_back();
                    if before.is_some_and(is_identifier) || text[..at].ends_with("fn ") {
                        continue;
                    }
                    let arguments = call_arguments(text, at + name.len());
                    if let Some(argument) = arguments.get(*position) {
                        codes.extend(snake_literals(argument));
                    }
                }
            }
            for (at, _) in text.match_indices("code: ") {
                if text[..at].ends_with(|c: char| is_identifier(c) || c == '"') {
                    continue;
                }
                let rest = &text[at + 6..];
                let end = rest.find('\n').unwrap_or(rest.len());
                codes.extend(snake_literals(&rest[..end]));
                let name: String = rest.chars().take_while(|c| is_identifier(*c)).collect();
                codes.extend(
                    constants
                        .iter()
                        .filter(|(constant, _)| *constant == name)
                        .map(|(_, value)| value.clone()),
                );
            }
            for (at, _) in text.match_indices("fn ") {
                let signature = text[at..].split('{').next().unwrap_or("");
                if !signature.contains("(&'static str, String)>") {
                    continue;
                }
                let body = block(text, at);
                for (err, _) in body.match_indices("Err((") {
                    if let Some(literal) = body[err + 5..].trim_start().strip_prefix('"') {
                        let end = literal.find('"').unwrap_or(0);
                        codes.extend(snake_literals(&format!("\"{}\"", &literal[..end])));
                    }
                }
            }
            for (at, _) in text.match_indices("let code = match") {
                codes.extend(arm_values(block(text, at)));
            }
            // `fn code` of an API error type, or of a model error type (its codes become
            // the codes of rejected records).
            for (at, _) in text.match_indices("fn code(&self) -> &'static str") {
                let implementation = text[..at].rfind("\nimpl").unwrap_or(0);
                let line = text[implementation..]
                    .trim_start()
                    .lines()
                    .next()
                    .unwrap_or("");
                if line.contains("ApiProblem") || (*in_model && line.contains("Error")) {
                    codes.extend(snake_literals(block(text, at)));
                }
            }
        }
        codes
    }

    /// Every code the broker can answer with: its API errors (broker) and the reason codes
    /// of rejected records, in ingest receipts and in quarantine (model, engine, broker, and
    /// every connector: mappings, file drops, SQL and REST pulls).
    fn every_code() -> BTreeSet<String> {
        let root = workspace();
        let mut files = Vec::new();
        for dir in ["broker/src", "engine/src", "model/src", "connectors/src"] {
            rust_files(&root.join(dir), &mut files);
        }
        codes_in(
            &files,
            &[
                ("rejection", 0),
                ("fail", 1),
                ("broken", 2),
                ("whole_file_failure", 1),
            ],
        )
    }

    /// The reason codes the connectors give a row or file they could not read or map, found
    /// by grep over `connectors/src` (every `MappingError`, `FileError`, `Refusal` and
    /// `CellError` they build, tests left out) besides the model's validation codes, which
    /// the mapping passes on. The scanner must find each: a code cannot lose its Chinese
    /// message by moving where the scanner does not look.
    const CONNECTOR_REJECT_CODES: &[&str] = &[
        // Mappings (connectors/src/mapping.rs).
        "mapping_bad_date",
        "mapping_bad_value",
        "mapping_missing_column",
        "mapping_missing_value",
        "mapping_unknown_code",
        // Files (connectors/src/file_drop): the whole file, a line, a cell.
        "file_not_regular",
        "file_too_large",
        "file_encoding",
        "file_unreadable",
        "csv_no_header",
        "csv_syntax",
        "csv_field_count",
        "sheet_missing",
        "sheet_no_header",
        "json_syntax",
        "record_not_object",
        "cell_error",
        "cell_precision_lost",
    ];

    #[test]
    fn the_scanner_finds_every_reject_code_of_the_connectors() {
        let codes = every_code();
        let unseen: Vec<&&str> = CONNECTOR_REJECT_CODES
            .iter()
            .filter(|code| !codes.contains(**code))
            .collect();
        assert!(unseen.is_empty(), "not found by the scanner: {unseen:?}");
        // And each still exists: a renamed code must be renamed here too.
        let mut files = Vec::new();
        rust_files(&workspace().join("connectors/src"), &mut files);
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect();
        for code in CONNECTOR_REJECT_CODES {
            assert!(text.contains(&format!("\"{code}\"")), "{code} is gone");
        }
        // Model validation codes reach quarantine through the mapping too.
        for code in [
            "id_number_checksum",
            "uscc_check",
            "phone_format",
            "field_missing",
        ] {
            assert!(codes.contains(code), "{code}");
        }
    }

    #[test]
    fn a_rejection_message_is_chinese_by_its_code_or_keeps_its_text() {
        let english = "the check digit does not match";
        assert_eq!(
            rejection_message("id_number_checksum", english, Language::English),
            english
        );
        assert_eq!(
            rejection_message("id_number_checksum", english, Language::Chinese),
            chinese("id_number_checksum").expect("in the catalog")
        );
        assert_eq!(
            rejection_message("departments_own_code", "as filed", Language::Chinese),
            "as filed"
        );
    }

    #[test]
    fn the_scanner_finds_codes_of_every_kind_of_call_site() {
        let codes = every_code();
        for code in [
            "not_found",
            "unauthenticated",
            "route_not_found",
            "rate_limited",
            "purpose_required",
            "role_cannot_read_audit",
            "integrity_error",
            "search_index_building",
            "audit_unavailable",
            "from_invalid",
            "grid_outside_jurisdiction",
            "identity_conflict",
            "record_not_object",
            "field_missing",
            "method_not_allowed",
        ] {
            assert!(codes.contains(code), "{code} not found among {codes:?}");
        }
        assert!(codes.len() > 100, "{}", codes.len());
        assert!(
            !codes.contains("gongan"),
            "a department code is no error code"
        );
    }

    #[test]
    fn every_code_has_a_chinese_message_and_the_catalog_none_unused() {
        let codes = every_code();
        let missing: Vec<&String> = codes.iter().filter(|c| chinese(c).is_none()).collect();
        assert!(
            missing.is_empty(),
            "codes without a Chinese message: {missing:?}"
        );
        let unused: Vec<&str> = CATALOG
            .iter()
            .map(|(code, _)| *code)
            .filter(|code| !codes.contains(*code))
            .collect();
        assert!(
            unused.is_empty(),
            "catalog entries no code uses: {unused:?}"
        );
        let listed: BTreeSet<&str> = CATALOG.iter().map(|(code, _)| *code).collect();
        assert_eq!(listed.len(), CATALOG.len(), "a code listed twice");
        for (code, message) in CATALOG {
            assert!(
                message
                    .chars()
                    .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
                "{code}: not Chinese"
            );
        }
    }
}
