//! A user's query string turned into one tantivy query with authorization inside it.
//!
//! Guarantees:
//! - The query is `+kind +(scope:j1 scope:j2 …) [+filters] +part1 +part2 …` per kind: the
//!   jurisdiction filter is part of the query, so totals and pages only ever count records in
//!   scope.
//! - A clause on a field the caller may not see ([`ViewPlan::field_level`] `Hidden`, or a
//!   field [`ViewPlan::apply`] removes) is dropped, and a part with no clause left matches nothing. A
//!   clause that needs more than the caller sees (a full or 6-digit ID, a full phone, a unit
//!   or room, a whole name while only the masked form is visible) is dropped too. A masked
//!   string (`110105********002X`) matches nothing.
//! - Where a field is visible only when its value came from some departments (e.g. health
//!   departments hidden from grid workers), the clause also requires the blind source guard
//!   of a visible department, so a value the caller's view would remove is never matched;
//!   a resident is found at all only if a department the caller may know about holds it.
//! - Only the caller's analysis decides what is searched: the same string gives the same
//!   query for callers with the same access, so counts reveal nothing beyond the results.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::Term;

use model::{Department, IdNumber, Phone, RecordKind};

use super::blind::Blinder;
use super::document::{
    department_guard, profile_field, reporter_guard, source_guard, tag_guard, ADULT_GUARD,
};
use super::filter::{FilterCache, FilterQuery, FilterSpec};
use super::schema::{Family, IndexFields};
use chinese_text::{address, fold, names, segment as text};
use model::profile::{MergedField, MergedTag, Profile, SourceRef};
use policies::view::ViewPlan;
use policies::Level as FieldLevel;
use policies::Principal;

/// A clause before authorization: terms of families, combined.
#[derive(Debug, Clone)]
pub enum Clause {
    Term {
        family: Family,
        term: String,
        boost: f32,
        /// The least level at which the caller must see the field.
        need: FieldLevel,
    },
    /// A tag, visible per tag and per asserting department.
    Tag {
        tag: String,
        boost: f32,
    },
    All(Vec<Clause>),
    Any(Vec<Clause>),
}

fn term(family: Family, term: String, boost: f32, need: FieldLevel) -> Clause {
    Clause::Term {
        family,
        term,
        boost,
        need,
    }
}

/// Filters on plaintext fields (events).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub event_type: Option<String>,
    pub status: Option<String>,
    /// A division code inside the caller's jurisdiction (grid, community …).
    pub grid: Option<String>,
    /// Unix seconds, inclusive.
    pub from: Option<i64>,
    /// Unix seconds, exclusive.
    pub to: Option<i64>,
    /// Events only: those still open past their deadline.
    pub overdue: Option<Overdue>,
    /// Events only: those recorded by this staff member (token `sub`).
    pub reported_by: Option<String>,
}

/// Events still open past their deadline (`GET /v1/events?overdue=true`): an event is late
/// when its status is one of `open_statuses` and its time (`occurred`: when it occurred) lies
/// before the cut-off of its type. The cut-offs are "now minus the type's deadline", worked
/// out by the caller for one moment, so the query itself reads no clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Overdue {
    /// The statuses that still run against a deadline (`reported`, `accepted` …).
    pub open_statuses: Vec<String>,
    /// Per event type, the cut-off (Unix seconds, exclusive): an event of that type that
    /// occurred before it is late.
    pub due_before: Vec<(String, i64)>,
    /// The cut-off of every type `due_before` does not name.
    pub default_due_before: i64,
}

/// The clauses of one whitespace-separated part of the query, for one kind.
pub fn part_clause(part: &str, kind: RecordKind) -> Clause {
    let folded = fold::fold(part);
    if folded.contains('*') || folded.contains('＊') {
        // A masked value is not a value: it must never match what it hides.
        return Clause::Any(Vec::new());
    }
    let compact: String = folded
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '(' | ')'))
        .collect();
    let mut any = Vec::new();
    if kind == RecordKind::Organization {
        if let Ok(code) = model::Uscc::parse(&compact) {
            any.push(term(
                Family::Code,
                format!("u:{}", code.as_str()),
                10.0,
                FieldLevel::Clear,
            ));
        }
    }
    let is_digits = !compact.is_empty()
        && compact
            .char_indices()
            .all(|(i, c)| c.is_ascii_digit() || (c == 'x' && i + 1 == compact.len()));
    if is_digits {
        identifier_clauses(&compact, kind, &mut any);
    } else if !compact.is_empty() && compact.bytes().all(|b| b.is_ascii_lowercase()) {
        if kind == RecordKind::Resident {
            pinyin_clauses(&compact, &mut any);
        }
        if kind == RecordKind::Organization {
            for (rank, t) in chinese_text::organizations::pinyin_query_terms(&compact)
                .into_iter()
                .enumerate()
            {
                let boost = [6.0, 3.0, 1.5, 1.5][rank.min(3)];
                any.push(term(Family::OrgName, t, boost, FieldLevel::Clear));
            }
        }
    } else {
        if kind == RecordKind::Organization {
            organization_name_clauses(&compact, &mut any);
        }
        if matches!(kind, RecordKind::Resident | RecordKind::Organization)
            && compact.chars().all(fold::is_cjk)
        {
            any.push(Clause::Tag {
                tag: compact.clone(),
                boost: 3.0,
            });
        }
        if kind == RecordKind::Resident {
            chinese_name_clauses(&compact, &mut any);
        }
        if let Some(query) = address::query_terms(&compact) {
            let need = if query.below_building {
                FieldLevel::Clear
            } else {
                FieldLevel::Masked
            };
            let groups = query
                .groups
                .into_iter()
                .map(|g| {
                    Clause::Any(
                        g.into_iter()
                            .map(|t| term(Family::Address, t, 2.0, need))
                            .collect(),
                    )
                })
                .collect();
            any.push(Clause::All(groups));
        }
        if kind == RecordKind::Event {
            let words = text::query_words(&compact);
            if !words.is_empty() {
                let clauses = words
                    .into_iter()
                    .map(|w| {
                        let mut alternatives = Vec::new();
                        for (family, boost) in
                            [(Family::TitleMasked, 2.0), (Family::BodyMasked, 1.0)]
                        {
                            for a in &w.alternatives {
                                alternatives.push(term(
                                    family,
                                    a.clone(),
                                    boost,
                                    FieldLevel::Masked,
                                ));
                            }
                        }
                        for (family, boost) in [(Family::Title, 2.0), (Family::Body, 1.0)] {
                            for a in &w.alternatives {
                                alternatives.push(term(
                                    family,
                                    a.clone(),
                                    boost,
                                    FieldLevel::Clear,
                                ));
                            }
                            if !w.bigrams.is_empty() {
                                alternatives.push(Clause::All(
                                    w.bigrams
                                        .iter()
                                        .map(|b| {
                                            term(family, b.clone(), boost * 0.5, FieldLevel::Clear)
                                        })
                                        .collect(),
                                ));
                            }
                        }
                        Clause::Any(alternatives)
                    })
                    .collect();
                any.push(Clause::All(clauses));
            }
        }
    }
    Clause::Any(any)
}

/// An organization's name typed in characters: the whole name, or every word of it (a word
/// matches as itself or by all its bigrams).
fn organization_name_clauses(text: &str, any: &mut Vec<Clause>) {
    let clear = FieldLevel::Clear;
    any.push(term(Family::OrgName, format!("n:{text}"), 10.0, clear));
    let words = text::query_words(text);
    if words.is_empty() {
        return;
    }
    let clauses = words
        .into_iter()
        .map(|w| {
            let mut alternatives: Vec<Clause> = w
                .alternatives
                .into_iter()
                .map(|a| term(Family::OrgName, a, 2.0, clear))
                .collect();
            if !w.bigrams.is_empty() {
                alternatives.push(Clause::All(
                    w.bigrams
                        .into_iter()
                        .map(|b| term(Family::OrgName, b, 1.0, clear))
                        .collect(),
                ));
            }
            Clause::Any(alternatives)
        })
        .collect();
    any.push(Clause::All(clauses));
}

fn identifier_clauses(digits: &str, kind: RecordKind, any: &mut Vec<Clause>) {
    let id_family = matches!(
        kind,
        RecordKind::Resident | RecordKind::House | RecordKind::Organization
    );
    match digits.len() {
        15 | 18 if id_family => {
            if let Ok(id) = IdNumber::parse(digits) {
                any.push(term(
                    Family::IdNumber,
                    format!("x:{}", id.as_str()),
                    10.0,
                    FieldLevel::Clear,
                ));
            }
        }
        6 if id_family => {
            any.push(term(
                Family::IdNumber,
                format!("l6:{}", digits.to_uppercase()),
                5.0,
                FieldLevel::Clear,
            ));
        }
        4 => {
            if id_family {
                any.push(term(
                    Family::IdNumber,
                    format!("l4:{}", digits.to_uppercase()),
                    4.0,
                    FieldLevel::Masked,
                ));
            }
            if matches!(kind, RecordKind::Resident | RecordKind::Organization) {
                any.push(term(
                    Family::Phone,
                    format!("t4:{digits}"),
                    4.0,
                    FieldLevel::Masked,
                ));
            }
        }
        _ => {}
    }
    if matches!(kind, RecordKind::Resident | RecordKind::Organization) && digits.len() >= 10 {
        if let Ok(phone) = Phone::parse(digits) {
            any.push(term(
                Family::Phone,
                format!("t:{}", phone.digits()),
                10.0,
                FieldLevel::Clear,
            ));
        }
    }
    if digits.len() <= 4 && !digits.contains('x') {
        let room = digits.trim_start_matches('0');
        any.push(term(
            Family::Address,
            format!("rm:{room}"),
            1.0,
            FieldLevel::Clear,
        ));
    }
}

fn pinyin_clauses(letters: &str, any: &mut Vec<Clause>) {
    let clear = FieldLevel::Clear;
    any.push(term(Family::NamePinyin, format!("f:{letters}"), 6.0, clear));
    any.push(term(
        Family::NamePinyin,
        format!("gf:{letters}"),
        2.5,
        clear,
    ));
    if names::is_syllable(letters) {
        any.push(term(Family::NamePinyin, format!("y:{letters}"), 2.0, clear));
    }
    any.push(term(Family::NameShort, format!("m:{letters}"), 2.0, clear));
    if letters.len() <= 5 {
        any.push(term(Family::NameShort, format!("i:{letters}"), 1.5, clear));
    }
    if (names::MIN_PREFIX..=names::MAX_PREFIX).contains(&letters.len()) {
        any.push(term(Family::NameShort, format!("p:{letters}"), 1.2, clear));
    }
    if let Some(fuzzy) = names::fuzzy_query_term(letters) {
        any.push(term(Family::NameFuzzy, fuzzy, 0.6, clear));
    }
}

fn chinese_name_clauses(text: &str, any: &mut Vec<Clause>) {
    let name = names::normalise_name(text);
    let count = name.chars().count();
    if count == 0 || count > 5 || !name.chars().all(fold::is_cjk) {
        return;
    }
    let is_surname = count == 1 || chinese_text::surnames::is_compound(&name);
    if is_surname {
        // The surname is what a masked name (`张*`) still shows.
        any.push(term(
            Family::NameChars,
            format!("s:{name}"),
            3.0,
            FieldLevel::Masked,
        ));
    }
    if count >= 2 {
        let clear = FieldLevel::Clear;
        any.push(term(Family::NameChars, format!("w:{name}"), 10.0, clear));
        any.push(term(Family::NameChars, format!("g:{name}"), 2.5, clear));
        if count == 2 {
            any.push(term(Family::NameChars, format!("b:{name}"), 2.0, clear));
        }
    }
}

/// What one caller may see, per kind, field and source department, learnt from the
/// caller's [`ViewPlan`] itself (its declared field levels, and what `apply` does to a probe
/// profile), so search can never be more permissive than the profile view.
#[derive(Debug)]
pub struct Access<'a> {
    principal: &'a Principal,
    plan: &'a ViewPlan,
    learnt: Arc<Learnt>,
}

/// What accesses with one [`AccessKey`] have learnt from their plans, shared between
/// searches (a plan's answers depend only on its key).
#[derive(Debug, Default)]
pub struct Learnt {
    /// By kind, field and whether the profile is a child's.
    levels: RwLock<HashMap<LevelKey, [FieldLevel; 8]>>,
    tags: RwLock<HashMap<(RecordKind, String, bool), [bool; 8]>>,
}

/// A kind, a field, and whether the profile is a child's.
type LevelKey = (RecordKind, &'static str, bool);

/// Tags one [`Learnt`] remembers at most (they come from what users type).
const MAX_LEARNT_TAGS: usize = 4_096;

/// Everything an [`Access`] depends on: the policy version, the caller's jurisdiction (the
/// probe profile's grid), the plan's declared level of every field search reads, and its
/// level of every data class for every owning department. [`ViewPlan::apply`] depends on
/// the plan only through these levels and the policy's tables (fixed by the version), so
/// two plans with equal keys view every profile alike, whatever roles or purpose made them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessKey {
    policy_version: String,
    jurisdiction: Vec<String>,
    declared: Vec<FieldLevel>,
    owned: Vec<FieldLevel>,
}

impl AccessKey {
    pub fn of(principal: &Principal, plan: &ViewPlan) -> AccessKey {
        let mut declared = Vec::new();
        for kind in RecordKind::ALL {
            for family in Family::ALL {
                if let Some(field) = profile_field(kind, family) {
                    declared.push(plan.field_level(kind, field));
                    declared.push(plan.minor_field_level(kind, field));
                }
            }
        }
        let mut owned = Vec::with_capacity((policies::CLASSES.len() + 1) * Department::ALL.len());
        // Every class the policy knows, and one it does not (a field of an unknown class is
        // hidden, or clear under break-glass: the same answer for every unknown class).
        for class in policies::CLASSES.into_iter().chain(["\u{0}unknown-class"]) {
            for department in Department::ALL {
                owned.push(plan.level(class, department));
                // A child's profile is viewed at the minor levels (policies::minor).
                owned.push(plan.minor_level(class, department));
            }
        }
        AccessKey {
            policy_version: plan.policy_version().to_owned(),
            jurisdiction: principal
                .jurisdiction
                .iter()
                .map(|j| j.as_str().to_owned())
                .collect(),
            declared,
            owned,
        }
    }
}

/// A value for each personal field that its mask visibly changes.
fn probe_value(field: &str) -> &'static str {
    match field {
        "name" => "张三丰",
        "id_number" | "owner_id_number" | "legal_rep_id_number" => "11010519491231002X",
        "uscc" => "91330100799655058B",
        "phone" => "13812345678",
        "address" => "北京市朝阳区望京街道幸福里小区3号楼2单元501",
        _ => "网格事件说明文字",
    }
}

impl<'a> Access<'a> {
    pub fn new(principal: &'a Principal, plan: &'a ViewPlan) -> Access<'a> {
        Access::learnt(principal, plan, Arc::new(Learnt::default()))
    }

    /// An access that uses (and adds to) what accesses with the same [`AccessKey`] learnt.
    pub fn learnt(principal: &'a Principal, plan: &'a ViewPlan, learnt: Arc<Learnt>) -> Access<'a> {
        Access {
            principal,
            plan,
            learnt,
        }
    }

    /// A profile of `kind` held by `department` inside the caller's jurisdiction; with
    /// `minor`, a resident's profile that says the person is 5 years old on the plan's day.
    fn probe_profile(&self, kind: RecordKind, department: Department, minor: bool) -> Profile {
        let mut profile = self.bare_probe(kind, department);
        if minor && kind == RecordKind::Resident {
            let birth = self
                .plan
                .today()
                .checked_sub_months(chrono::Months::new(60))
                .unwrap_or_default();
            profile.fields.insert(
                "birth_date".to_owned(),
                MergedField {
                    value: serde_json::Value::String(birth.format("%Y-%m-%d").to_string()),
                    source: department,
                    version: "1".to_owned(),
                    conflicts: Vec::new(),
                },
            );
        }
        profile
    }

    fn bare_probe(&self, kind: RecordKind, department: Department) -> Profile {
        Profile {
            id: "probe".to_owned(),
            kind,
            grid: self
                .principal
                .jurisdiction
                .first()
                .map(|j| j.as_str().to_owned()),
            fields: Default::default(),
            tags: Vec::new(),
            attributes: Default::default(),
            related: Default::default(),
            sources: vec![SourceRef {
                department,
                source_id: "probe".to_owned(),
                version: "1".to_owned(),
                received_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            }],
            history: Vec::new(),
        }
    }

    /// The level at which the caller sees `field` of a `kind` entity when the value came
    /// from each department: the lower of the plan's field level and what `apply` does.
    /// With `minor`, the same on a child's profile ([`policies::minor`]).
    fn levels(&mut self, kind: RecordKind, field: &'static str, minor: bool) -> [FieldLevel; 8] {
        if let Some(levels) = self
            .learnt
            .levels
            .read()
            .ok()
            .and_then(|l| l.get(&(kind, field, minor)).copied())
        {
            return levels;
        }
        let declared = if minor {
            self.plan.minor_field_level(kind, field)
        } else {
            self.plan.field_level(kind, field)
        };
        let mut out = [FieldLevel::Hidden; 8];
        for (slot, department) in out.iter_mut().zip(Department::ALL) {
            let sample = serde_json::Value::String(probe_value(field).to_owned());
            let mut profile = self.probe_profile(kind, department, minor);
            profile.fields.insert(
                field.to_owned(),
                MergedField {
                    value: sample.clone(),
                    source: department,
                    version: "1".to_owned(),
                    conflicts: Vec::new(),
                },
            );
            self.plan.apply(&mut profile, &[], None);
            let applied = match profile.fields.get(field) {
                None => FieldLevel::Hidden,
                Some(f) if f.value != sample || f.source != department => FieldLevel::Masked,
                Some(_) => FieldLevel::Clear,
            };
            *slot = declared.min(applied);
        }
        if let Ok(mut levels) = self.learnt.levels.write() {
            levels.insert((kind, field, minor), out);
        }
        out
    }

    fn tag_visible(&mut self, kind: RecordKind, tag: &str, minor: bool) -> [bool; 8] {
        if let Some(v) = self
            .learnt
            .tags
            .read()
            .ok()
            .and_then(|t| t.get(&(kind, tag.to_owned(), minor)).copied())
        {
            return v;
        }
        let mut out = [false; 8];
        for (slot, department) in out.iter_mut().zip(Department::ALL) {
            let mut profile = self.probe_profile(kind, department, minor);
            profile.tags.push(MergedTag {
                tag: tag.to_owned(),
                sources: vec![department],
            });
            self.plan.apply(&mut profile, &[], None);
            *slot = profile
                .tags
                .iter()
                .any(|t| t.tag == tag && t.sources.contains(&department));
        }
        if let Ok(mut tags) = self.learnt.tags.write() {
            if tags.len() >= MAX_LEARNT_TAGS {
                tags.clear();
            }
            tags.insert((kind, tag.to_owned(), minor), out);
        }
        out
    }

    /// Departments whose holding of a resident the caller may know about.
    fn visible_departments(&self) -> Vec<Department> {
        Department::ALL
            .into_iter()
            .filter(|d| self.plan.department_visible(*d))
            .collect()
    }
}

/// Compiles clauses to tantivy queries for one kind, with authorization.
#[derive(Debug)]
pub struct Compiler<'a, 'b> {
    pub fields: &'a IndexFields,
    pub blinder: &'a Blinder,
    pub access: &'a mut Access<'b>,
    pub kind: RecordKind,
    /// Where the authorization filters' bitsets are kept ([`super::filter`]).
    pub filters: &'a Arc<FilterCache>,
}

impl Compiler<'_, '_> {
    fn blind_term(&self, family: Family, term: &str) -> Term {
        Term::from_field_text(
            self.fields.get(family),
            &self.blinder.token(family.name(), term),
        )
    }

    fn term_query(&self, family: Family, term: &str, boost: f32) -> Box<dyn Query> {
        let t = self.blind_term(family, term);
        if family.ranked() {
            Box::new(BoostQuery::new(
                Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)),
                boost,
            ))
        } else {
            Box::new(ConstScoreQuery::new(
                Box::new(TermQuery::new(t, IndexRecordOption::Basic)),
                boost,
            ))
        }
    }

    /// A filter that contributes nothing to the score.
    fn filter(query: Box<dyn Query>) -> Box<dyn Query> {
        Box::new(ConstScoreQuery::new(query, 0.0))
    }

    /// The blind tokens of `guards`, as a filter group.
    fn guard_tokens(&self, guards: &[String]) -> Vec<String> {
        guards
            .iter()
            .map(|g| self.blinder.token(Family::Guard.name(), g))
            .collect()
    }

    /// A filter matching documents with any of `guards` (a cached bitset per segment).
    fn any_guard(&self, guards: Vec<String>) -> Box<dyn Query> {
        let spec =
            FilterSpec::new().any_of(self.fields.get(Family::Guard), self.guard_tokens(&guards));
        Box::new(FilterQuery::new(spec, self.filters.clone()))
    }

    /// `term` in `family`, limited to documents where a value of a department in `guards`
    /// (source or tag guards) holds it. With `child` (a resident's clause), the guards the
    /// caller may match on a child's profile: where they are fewer, the other guards match
    /// only adults' documents ([`ADULT_GUARD`]), so a child is never found by what the caller
    /// sees of a child only masked or not at all. `None` if nothing can match.
    fn guarded(
        &self,
        family: Family,
        term: &str,
        boost: f32,
        guards: Vec<String>,
        child: Option<Vec<String>>,
    ) -> Option<Box<dyn Query>> {
        if guards.is_empty() {
            return None;
        }
        // A clause every department's value may match needs no source guard; a tag always
        // does (it is asserted per department).
        let limited =
            |query: Box<dyn Query>, guards: Vec<String>, adults: bool| -> Box<dyn Query> {
                let mut must = vec![(Occur::Must, query)];
                if family == Family::Tag || guards.len() < Department::ALL.len() {
                    must.push((Occur::Must, self.any_guard(guards)));
                }
                if adults {
                    must.push((Occur::Must, self.any_guard(vec![ADULT_GUARD.to_owned()])));
                }
                if must.len() == 1 {
                    must.remove(0).1
                } else {
                    Box::new(BooleanQuery::new(must))
                }
            };
        let query = self.term_query(family, term, boost);
        match child {
            // A child's profile shows at least as much: one query for every document.
            Some(child) if child.len() < guards.len() => {
                let adults = limited(query, guards, true);
                if child.is_empty() {
                    return Some(adults);
                }
                let children = limited(self.term_query(family, term, boost), child, false);
                Some(Box::new(BooleanQuery::new(vec![
                    (Occur::Should, adults),
                    (Occur::Should, children),
                ])))
            }
            _ => Some(limited(query, guards, false)),
        }
    }

    /// The query of `clause`, or `None` if it can match nothing for this caller.
    pub fn compile(&mut self, clause: &Clause) -> Option<Box<dyn Query>> {
        match clause {
            Clause::Term {
                family,
                term,
                boost,
                need,
            } => {
                let field = profile_field(self.kind, *family)?;
                let seen = |levels: [FieldLevel; 8]| -> Vec<Department> {
                    Department::ALL
                        .into_iter()
                        .zip(levels)
                        .filter(|(_, level)| level >= need)
                        .map(|(d, _)| d)
                        .collect()
                };
                let visible = seen(self.access.levels(self.kind, field, false));
                let guards: Vec<String> = visible.iter().map(|d| source_guard(field, *d)).collect();
                let child = (self.kind == RecordKind::Resident)
                    .then(|| seen(self.access.levels(self.kind, field, true)))
                    .map(|d| d.iter().map(|d| source_guard(field, *d)).collect());
                self.guarded(*family, term, *boost, guards, child)
            }
            Clause::Tag { tag, boost } => {
                profile_field(self.kind, Family::Tag)?;
                let seen = |visible: [bool; 8]| -> Vec<String> {
                    Department::ALL
                        .into_iter()
                        .zip(visible)
                        .filter(|(_, v)| *v)
                        .map(|(d, _)| tag_guard(tag, d))
                        .collect()
                };
                let guards = seen(self.access.tag_visible(self.kind, tag, false));
                let child = (self.kind == RecordKind::Resident)
                    .then(|| seen(self.access.tag_visible(self.kind, tag, true)));
                let term = format!("t:{tag}");
                self.guarded(Family::Tag, &term, *boost, guards, child)
            }
            Clause::All(children) => {
                if children.is_empty() {
                    return None;
                }
                let mut subs = Vec::with_capacity(children.len());
                for child in children {
                    subs.push((Occur::Must, self.compile(child)?));
                }
                Some(Box::new(BooleanQuery::new(subs)))
            }
            Clause::Any(children) => {
                let subs: Vec<(Occur, Box<dyn Query>)> = children
                    .iter()
                    .filter_map(|c| self.compile(c))
                    .map(|q| (Occur::Should, q))
                    .collect();
                if subs.is_empty() {
                    None
                } else {
                    Some(Box::new(BooleanQuery::new(subs)))
                }
            }
        }
    }

    /// Events still open past their type's deadline, as a filter (`None`: no status is
    /// open, so nothing can be late).
    fn overdue_query(&self, overdue: &Overdue) -> Option<Box<dyn Query>> {
        let plain = |field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let before = |cut_off: i64| -> Box<dyn Query> {
            Box::new(RangeQuery::new(
                Bound::Unbounded,
                Bound::Excluded(Term::from_field_i64(self.fields.occurred, cut_off)),
            ))
        };
        let open: Vec<(Occur, Box<dyn Query>)> = overdue
            .open_statuses
            .iter()
            .map(|status| (Occur::Should, plain(self.fields.status, status)))
            .collect();
        if open.is_empty() {
            return None;
        }
        // One branch per type with its own deadline, and one for every other type.
        let mut late: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut other = vec![(Occur::Must, before(overdue.default_due_before))];
        for (event_type, cut_off) in &overdue.due_before {
            let branch = BooleanQuery::new(vec![
                (Occur::Must, plain(self.fields.event_type, event_type)),
                (Occur::Must, before(*cut_off)),
            ]);
            late.push((Occur::Should, Box::new(branch)));
            other.push((Occur::MustNot, plain(self.fields.event_type, event_type)));
        }
        late.push((Occur::Should, Box::new(BooleanQuery::new(other))));
        Some(Self::filter(Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(BooleanQuery::new(open))),
            (Occur::Must, Box::new(BooleanQuery::new(late))),
        ]))))
    }

    /// The whole query for this kind: kind, scope, filters and every part; `None` if it can
    /// match nothing.
    pub fn kind_query(&mut self, parts: &[String], filters: &Filters) -> Option<Box<dyn Query>> {
        let scopes: Vec<String> = self
            .access
            .principal
            .jurisdiction
            .iter()
            .map(|j| j.as_str().to_owned())
            .collect();
        if scopes.is_empty() {
            return None;
        }
        let plain = |field, value: &str| -> Box<dyn Query> {
            Self::filter(Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            )))
        };
        // Kind, jurisdiction, grid and department visibility: one cached filter.
        let mut spec = FilterSpec::new()
            .any_of(self.fields.kind, vec![self.kind.as_str().to_owned()])
            .any_of(self.fields.scope, scopes);
        if let Some(grid) = &filters.grid {
            spec = spec.any_of(self.fields.scope, vec![grid.clone()]);
        }
        if self.kind == RecordKind::Resident {
            let visible = self.access.visible_departments();
            if visible.is_empty() {
                return None;
            }
            if visible.len() < Department::ALL.len() {
                let guards: Vec<String> = visible.into_iter().map(department_guard).collect();
                spec = spec.any_of(self.fields.get(Family::Guard), self.guard_tokens(&guards));
            }
        }
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(FilterQuery::new(spec, self.filters.clone())),
        )];
        if self.kind == RecordKind::Organization {
            if let Some(t) = &filters.event_type {
                must.push((Occur::Must, plain(self.fields.event_type, t)));
            }
            if filters.status.is_some()
                || filters.from.is_some()
                || filters.to.is_some()
                || filters.overdue.is_some()
                || filters.reported_by.is_some()
            {
                return None;
            }
        } else if self.kind == RecordKind::Event {
            if let Some(t) = &filters.event_type {
                must.push((Occur::Must, plain(self.fields.event_type, t)));
            }
            if let Some(s) = &filters.status {
                must.push((Occur::Must, plain(self.fields.status, s)));
            }
            if let Some(overdue) = &filters.overdue {
                must.push((Occur::Must, self.overdue_query(overdue)?));
            }
            if let Some(sub) = &filters.reported_by {
                must.push((Occur::Must, self.any_guard(vec![reporter_guard(sub)])));
            }
            if filters.from.is_some() || filters.to.is_some() {
                let bound = |v: Option<i64>, inclusive: bool| match v {
                    Some(v) if inclusive => {
                        Bound::Included(Term::from_field_i64(self.fields.occurred, v))
                    }
                    Some(v) => Bound::Excluded(Term::from_field_i64(self.fields.occurred, v)),
                    None => Bound::Unbounded,
                };
                let range = RangeQuery::new(bound(filters.from, true), bound(filters.to, false));
                must.push((Occur::Must, Self::filter(Box::new(range))));
            }
        } else if filters.event_type.is_some()
            || filters.status.is_some()
            || filters.from.is_some()
            || filters.to.is_some()
            || filters.overdue.is_some()
            || filters.reported_by.is_some()
        {
            return None;
        }
        for part in parts {
            let clause = part_clause(part, self.kind);
            must.push((Occur::Must, self.compile(&clause)?));
        }
        Some(Box::new(BooleanQuery::new(must)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(clause: &Clause, out: &mut Vec<String>) {
        match clause {
            Clause::Term { term, .. } => out.push(term.clone()),
            Clause::Tag { tag, .. } => out.push(format!("t:{tag}")),
            Clause::All(c) | Clause::Any(c) => c.iter().for_each(|c| terms(c, out)),
        }
    }

    #[test]
    fn a_masked_id_is_no_query() {
        let clause = part_clause("110105********002X", RecordKind::Resident);
        let mut out = Vec::new();
        terms(&clause, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn digits_are_read_as_identifiers() {
        let mut out = Vec::new();
        terms(&part_clause("002X", RecordKind::Resident), &mut out);
        assert!(out.contains(&"l4:002X".to_owned()));
        let mut out = Vec::new();
        terms(
            &part_clause("138-1234-5678", RecordKind::Resident),
            &mut out,
        );
        assert!(out.contains(&"t:13812345678".to_owned()));
    }

    #[test]
    fn chinese_is_never_fuzzy() {
        let mut out = Vec::new();
        terms(&part_clause("张三", RecordKind::Resident), &mut out);
        assert!(out.iter().all(|t| !t.starts_with("z:")));
        let mut out = Vec::new();
        terms(&part_clause("zhangsan", RecordKind::Resident), &mut out);
        assert!(out.contains(&"z:zansan".to_owned()));
    }
}
