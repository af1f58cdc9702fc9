//! The policy decision and masking of one full resident profile: building the caller's
//! view plan from the compiled policy and applying it (masks, tags, attributes, redaction).
//!
//! Run: `cargo bench -p policies --bench policy`

use std::collections::BTreeMap;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use model::profile::{Alternative, EntityRef, MergedField, MergedTag, Profile, SourceRef};
use model::{Department, RecordKind};
use policies::authz::{PolicyFiles, PolicySet};
use policies::redact::NameDirectory;
use policies::view::ViewPlan;
use policies::Principal;

fn field(value: Value, source: Department) -> MergedField {
    MergedField {
        value,
        source,
        version: "2026-11-01T08:00:00Z".into(),
        conflicts: vec![],
    }
}

/// A resident as five departments publish it: every field, tags of every class, attributes.
fn profile() -> Profile {
    let mut fields = BTreeMap::new();
    for (name, value) in [
        ("id_number", json!("11010519491231002X")),
        ("name", json!("张三")),
        ("gender", json!("male")),
        ("birth_date", json!("1949-12-31")),
        ("ethnicity", json!("汉族")),
        ("phone", json!("13812345678")),
        (
            "address",
            json!("北京市朝阳区望京街道幸福里小区3号楼2单元501"),
        ),
        (
            "hukou_address",
            json!("北京市朝阳区望京街道幸福里小区3号楼2单元501"),
        ),
        ("house_source_id", json!("ZJ-55")),
        ("grid", json!("110105001001003")),
    ] {
        fields.insert(name.to_owned(), field(value, Department::Gongan));
    }
    if let Some(phone) = fields.get_mut("phone") {
        phone.conflicts.push(Alternative {
            value: json!("13912345678"),
            source: Department::Minzheng,
            version: "2026-11-05T08:00:00Z".into(),
        });
    }
    let tags = [
        ("户籍人口", Department::Gongan),
        ("低保", Department::Minzheng),
        ("独居老人", Department::Minzheng),
        ("慢性病", Department::Weijian),
        ("社区矫正", Department::Sifa),
    ]
    .into_iter()
    .map(|(tag, d)| MergedTag {
        tag: tag.into(),
        sources: vec![d],
    })
    .collect();
    let mut attributes = BTreeMap::new();
    for (d, v) in [
        (
            Department::Minzheng,
            json!({"allowance_monthly": 1200, "care_service": "紧急呼叫"}),
        ),
        (Department::Weijian, json!({"diagnosis": "高血压"})),
        (Department::Sifa, json!({"case_type": "缓刑"})),
    ] {
        if let Value::Object(map) = v {
            attributes.insert(d, map);
        }
    }
    let mut related = BTreeMap::new();
    related.insert(
        "events".to_owned(),
        vec![EntityRef {
            label: Some("张三（电话13812345678）反映楼上漏水".into()),
            departments: vec![Department::Wangge],
            grid: Some("110105001001003".into()),
            ..EntityRef::bare("e_1".into())
        }],
    );
    let sources = [
        Department::Gongan,
        Department::Minzheng,
        Department::Weijian,
        Department::Sifa,
        Department::Wangge,
    ]
    .into_iter()
    .map(|d| SourceRef {
        department: d,
        source_id: format!("{d}-1"),
        version: "1".into(),
        received_at: chrono::Utc::now(),
    })
    .collect();
    Profile {
        id: "r_1".into(),
        kind: RecordKind::Resident,
        grid: Some("110105001001003".into()),
        fields,
        tags,
        attributes,
        related,
        sources,
        history: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let purposes: Vec<String> = policies::DEFAULT_PURPOSES
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    let policy = Arc::new(
        runtime
            .block_on(PolicySet::compile(&PolicyFiles::defaults(), &purposes))
            .expect("the default policy compiles"),
    );
    let directory = NameDirectory::new(["张三", "李四", "欧阳娜娜"]);
    let template = profile();
    for (role, purpose) in [
        ("grid_worker", "routine_visit"),
        ("street_officer", "case_investigation"),
    ] {
        let principal = Principal {
            sub: "bench".into(),
            name: "bench".into(),
            roles: vec![role.into()],
            jurisdiction: vec![],
            dept: None,
        };
        c.bench_function(&format!("view/{role}/{purpose}"), |b| {
            b.iter_batched(
                || template.clone(),
                |mut p| {
                    let plan = ViewPlan::new(policy.clone(), &principal, purpose, false);
                    plan.apply(&mut p, &["张三".to_owned()], Some(&directory))
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

/// The names of a large street: `n` distinct two- and three-character names drawn from
/// common surname and given-name characters by a fixed linear congruential sequence (not the
/// demo's generator).
fn names(n: usize) -> Vec<String> {
    let surnames: Vec<char> = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤".chars().collect();
    let given: Vec<char> = "伟芳娜秀敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华玉萍红建文辉力梅鑫宇浩凯佳欣怡晨阳雪琳晓东海波鹏飞云峰俊斌宁志国庆春秋燕玲丹亮成龙健新民".chars().collect();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % m
    };
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n {
        let mut name = String::new();
        name.push(surnames[next(surnames.len())]);
        for _ in 0..1 + next(2) {
            name.push(given[next(given.len())]);
        }
        seen.insert(name);
    }
    seen.into_iter().collect()
}

/// Finding the names in an event's text against a directory of 200,000 names: the directory
/// (a hash lookup per candidate position) beside one automaton over the same names (what the
/// directory was until 6 December). Run: `cargo bench -p policies --bench policy -- names`.
fn directory_scan(c: &mut Criterion) {
    let all = names(200_000);
    let directory = NameDirectory::new(&all);
    let automaton = aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostLongest)
        .kind(Some(aho_corasick::AhoCorasickKind::NoncontiguousNFA))
        .build(&all)
        .expect("an automaton");
    let text = format!(
        "{}与{}因楼道堆放杂物发生口角，网格员到场调解，双方同意三日内清理，{}表示会配合社区工作",
        all[0], all[1], all[2]
    );
    c.bench_function("names/directory/200k", |b| {
        b.iter(|| directory.spans(&text))
    });
    c.bench_function("names/automaton/200k", |b| {
        b.iter(|| {
            automaton
                .find_iter(&text)
                .map(|m| m.range())
                .collect::<Vec<_>>()
        })
    });
}

criterion_group!(benches, bench, directory_scan);
criterion_main!(benches);
