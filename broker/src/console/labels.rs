//! The console's Chinese words for the API's codes: fields, event states and types, purposes,
//! audit actions and decisions. A code without a word is shown as it is.

/// A profile field's label.
pub fn field(name: &str) -> String {
    let label = match name {
        "name" => "姓名",
        "id_number" => "公民身份号码",
        "phone" => "联系电话",
        "address" => "地址",
        "gender" => "性别",
        "age" => "年龄",
        "birth_date" => "出生日期",
        "ethnicity" => "民族",
        "nationality" => "国籍",
        "grid" => "网格",
        "household_relation" => "与户主关系",
        "household_id" => "户号",
        "marital_status" => "婚姻状况",
        "education" => "文化程度",
        "employer" => "工作单位",
        "title" => "标题",
        "description" => "描述",
        "type" => "类型",
        "status" => "状态",
        "occurred_at" => "发生时间",
        "reported_at" => "上报时间",
        "reported_by" => "上报人",
        "routed_to" => "流转部门",
        "history" => "办理记录",
        "party_entities" => "当事人",
        "usage" => "用途",
        "owner_id_number" => "产权人证件号码",
        "area" => "面积",
        "uscc" => "统一社会信用代码",
        "legal_rep_id_number" => "法定代表人证件号码",
        "document_type" => "证件类型",
        "document_number" => "证件号码",
        _ => return name.to_owned(),
    };
    label.to_owned()
}

/// A field value's words, where the API gives a code (gender).
pub fn value(field: &str, text: &str) -> String {
    match (field, text) {
        ("gender", "male") => "男".to_owned(),
        ("gender", "female") => "女".to_owned(),
        ("gender", "unknown") => "未知".to_owned(),
        _ => text.to_owned(),
    }
}

/// An event state's label (上报 … 结案).
pub fn status(code: &str) -> String {
    let label = match code {
        "reported" => "上报",
        "accepted" => "受理",
        "dispatched" => "分拨",
        "in_progress" => "处置",
        "resolved" => "办结",
        "verified" => "核查",
        "closed" => "结案",
        "rejected" => "驳回",
        "open" => "未办结",
        _ => return code.to_owned(),
    };
    label.to_owned()
}

/// An event type's label.
pub fn event_type(code: &str) -> String {
    let label = match code {
        "dispute" => "矛盾纠纷",
        "group_rental" => "群租房",
        "fire_hazard" => "消防隐患",
        "e_bike_charging" => "电动车违规充电",
        "illegal_construction" => "违法建设",
        "falling_objects" => "高空坠物隐患",
        "sanitation" => "环境卫生",
        "elderly_visit" => "独居老人关爱",
        "visit" => "走访",
        "public_security" => "治安隐患",
        "road_damage" => "道路破损",
        _ => return code.to_owned(),
    };
    label.to_owned()
}

/// A purpose of use's label.
pub fn purpose(code: &str) -> String {
    let label = match code {
        "routine_visit" => "日常走访",
        "dispute_mediation" => "矛盾调解",
        "elderly_care" => "养老服务",
        "emergency" => "应急处置",
        "case_investigation" => "案件调查",
        "child_protection" => "未成年人保护",
        _ => return code.to_owned(),
    };
    label.to_owned()
}

/// An audit action's label.
pub fn action(code: &str) -> String {
    let label = match code {
        "read_resident" => "查看居民档案",
        "read_house" => "查看房屋",
        "read_event" => "查看事件",
        "read_organization" => "查看单位",
        "search" => "搜索",
        "ingest" => "数据报送",
        "report_event" => "上报事件",
        "record_visit" => "记录走访",
        "transition_event" => "事件流转",
        "exchange_delivery" => "数据推送",
        "policy_change" => "策略变更",
        "audit_search" => "检索访问日志",
        "audit_export" => "导出访问日志",
        "resident_report" => "居民查询报告",
        "audit_mine" => "查看我的查询记录",
        "refused" => "被拒绝的请求",
        _ => return code.to_owned(),
    };
    label.to_owned()
}

/// An audit decision's label.
pub fn decision(code: &str) -> String {
    let label = match code {
        "allow" => "允许",
        "deny" => "拒绝",
        "mask" | "masked" | "allow_masked" => "脱敏",
        "break_glass" => "紧急授权",
        _ => return code.to_owned(),
    };
    label.to_owned()
}

/// A role's label.
pub fn role(code: &str) -> String {
    let label = match code {
        "grid_worker" => "网格员",
        "community_officer" => "社区干部",
        "street_officer" => "街道干部",
        "compliance_officer" => "合规专员",
        "security_admin" => "安全管理员",
        "system_admin" => "系统管理员",
        "dept_publisher" => "部门报送",
        "dept_subscriber" => "部门接收",
        "dept_analyst" => "部门分析员",
        _ => return code.to_owned(),
    };
    label.to_owned()
}

/// A kind's label.
pub fn kind(code: &str) -> &'static str {
    match code {
        "resident" => "居民",
        "house" => "房屋",
        "event" => "事件",
        "organization" => "单位",
        _ => "其他",
    }
}

/// A grid or other division code with its place names (GB/T 2260 for the district, the
/// levels below by number), e.g. "北京市 朝阳区 街道001 社区001 网格003（110105001001003）".
pub fn division(code: &str) -> String {
    match model::DivisionCode::parse(code)
        .ok()
        .and_then(|c| c.display_name())
    {
        Some(name) => format!("{name}（{code}）"),
        None => code.to_owned(),
    }
}

/// A department's Chinese name, from its code.
pub fn department(code: &str) -> String {
    code.parse::<model::Department>()
        .map(|d| d.chinese_name().to_owned())
        .unwrap_or_else(|_| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_default_purpose_has_a_word() {
        for state in policies::EVENT_STATES {
            assert_ne!(status(state), state, "state {state} has no label");
        }
        for p in crate::config::DEFAULT_PURPOSES {
            assert_ne!(purpose(p), p, "purpose {p} has no label");
        }
        assert_eq!(field("unheard_of"), "unheard_of");
        assert_eq!(department("gongan"), "公安");
        assert!(division("110105001001003").starts_with("北京市 朝阳区"));
        assert_eq!(division("not a code"), "not a code");
    }
}
