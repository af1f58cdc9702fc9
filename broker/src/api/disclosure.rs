//! The disclosure gate: the only way personal data becomes a response.
//!
//! Guarantees:
//! - A merged [`Profile`] does not implement `Serialize` (checked at compile time below), so
//!   no handler can send one. What a handler can send is a [`Disclosed`] value, and only this
//!   module can make one: after the jurisdiction check, the caller's [`ViewPlan`], and an
//!   audit record that is durable (fsync) before the value exists.
//! - Profiles, by-source lookups and search hits all pass here; a record outside the
//!   caller's jurisdiction, or known only from departments the caller may not know about,
//!   answers exactly like a missing one, and the refusal is audited.
//! - The profile is built only from the departments the plan lets the caller know about,
//!   for every kind (a justice department's mediation event is no more visible by id than
//!   inside a resident's related list).

use std::collections::BTreeMap;

use audit::Decision;
use model::{Department, DivisionCode, RecordKind};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::Reader;
use super::AppState;
use engine::resolve::{AuthorityOrder, ResolveError, Resolver};
use model::profile::Profile;
use policies::view::{ViewOutcome, ViewPlan};
use policies::Principal;
use std::sync::Arc;
use vault::crypto::KeyRing;
use vault::store::Store;

/// The sealed store, the keys and the authority order, as the API holds them. Its fields are
/// private to this module: handlers cannot open records or build profiles themselves; they
/// get disclosed values from the gate and a few non-personal facts from the methods below.
#[derive(Debug)]
pub struct Vault {
    store: Arc<Store>,
    keys: Arc<KeyRing>,
    authority: AuthorityOrder,
}

impl Vault {
    pub fn new(store: Arc<Store>, keys: Arc<KeyRing>, authority: AuthorityOrder) -> Vault {
        Vault {
            store,
            keys,
            authority,
        }
    }

    /// Whether the store can be read (readiness).
    pub fn readable(&self) -> bool {
        self.store.read().is_ok()
    }

    /// The store's change sequence head (0 when it cannot be read).
    pub fn change_seq(&self) -> u64 {
        self.store
            .read()
            .and_then(|reader| reader.change_seq())
            .unwrap_or(0)
    }

    /// A stored batch receipt (no personal data: counts, codes and lines).
    pub fn receipt(&self, batch_id: &str) -> Result<Option<Vec<u8>>, vault::store::StoreError> {
        self.store.read()?.receipt(batch_id)
    }

    /// The keyed reference of a resident in the audit log (never the ID number).
    pub fn audit_reference(&self, entity: &str) -> String {
        hex::encode(&self.keys.audit_subject(entity)[..16])
    }

    /// The unified id of the resident with this ID number.
    pub fn resident_entity(&self, id: &model::IdNumber) -> String {
        engine::keyed::resident_entity_id(&self.keys, id)
    }

    /// The unified id a resident row would have standing alone (no ID, not linked).
    pub fn standalone_entity(&self, row: &str) -> String {
        engine::keyed::source_entity_id(&self.keys, row)
    }

    /// The store is the embedded file, which a backup copies (a PostgreSQL store is backed up
    /// by the database's own tools).
    pub fn store_is_embedded(&self) -> bool {
        self.store.is_embedded()
    }

    /// A consistent backup of the store and the audit log under `target`.
    pub fn backup(
        &self,
        data_dir: &std::path::Path,
        target: &std::path::Path,
    ) -> anyhow::Result<vault::backup::Manifest> {
        vault::backup::snapshot(&self.store, data_dir, target)
    }
}

/// A value that passed the gate: scoped, viewed through the caller's plan, and audited.
/// Its field is private to this module, so nothing else can make one.
#[derive(Debug)]
pub struct Disclosed<T>(T);

impl<T> Disclosed<T> {
    /// Read access for handlers that reshape a disclosed value (never to build a new one).
    pub fn get(&self) -> &T {
        &self.0
    }
}

// A raw profile must never be serializable: this fails to compile if `Profile` gains
// `Serialize` (the "ambiguous impl" trick: with `Serialize`, two impls of the helper trait
// match and the type of `_` cannot be inferred).
const _: fn() = || {
    trait AmbiguousIfSerialize<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSerialize<()> for T {}
    #[allow(dead_code)]
    struct Invalid;
    impl<T: ?Sized + Serialize> AmbiguousIfSerialize<Invalid> for T {}
    let _ = <Profile as AmbiguousIfSerialize<_>>::check;
    let _ = <model::profile::MergedField as AmbiguousIfSerialize<_>>::check;
    let _ = <model::profile::EntityRef as AmbiguousIfSerialize<_>>::check;
};

/// ```compile_fail
/// // A raw merged profile cannot be turned into JSON: only the gate's `Disclosed` can.
/// fn leak(profile: &model::profile::Profile) -> String {
///     serde_json::to_string(profile).unwrap_or_default()
/// }
/// ```
///
/// ```compile_fail
/// // Nor can a handler outside the gate make a `Disclosed` value itself.
/// fn forge(profile: model::profile::Profile) -> broker::api::disclosure::Disclosed<model::profile::Profile> {
///     broker::api::disclosure::Disclosed(profile)
/// }
/// ```
///
/// ```
/// // The same calls compile where they are allowed, so the two checks above fail for the
/// // reason they name: a serializable value serializes, and a disclosed profile can be read.
/// let _ = serde_json::to_string(&model::RecordKind::Resident);
/// fn read(d: &broker::api::disclosure::Disclosed<model::profile::Profile>) -> &str {
///     &d.get().id
/// }
/// ```
#[allow(dead_code)]
fn raw_profiles_do_not_serialize() {}

#[derive(Serialize)]
struct FieldWire<'a> {
    value: &'a Value,
    source: Department,
    version: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<AlternativeWire<'a>>,
}

#[derive(Serialize)]
struct AlternativeWire<'a> {
    value: &'a Value,
    source: Department,
    version: &'a str,
}

#[derive(Serialize)]
struct TagWire<'a> {
    tag: &'a str,
    sources: &'a [Department],
}

#[derive(Serialize)]
struct RefWire<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
}

#[derive(Serialize)]
struct SourceWire<'a> {
    department: Department,
    source_id: &'a str,
    version: &'a str,
    received_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize)]
struct ProfileWire<'a> {
    id: &'a str,
    kind: RecordKind,
    grid: Option<&'a str>,
    fields: BTreeMap<&'a str, FieldWire<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<TagWire<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: &'a BTreeMap<Department, Map<String, Value>>,
    related: BTreeMap<&'a str, Vec<RefWire<'a>>>,
    sources: Vec<SourceWire<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    history: &'a [model::profile::ScopeMove],
}

impl Serialize for Disclosed<Profile> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = &self.0;
        ProfileWire {
            id: &p.id,
            kind: p.kind,
            grid: p.grid.as_deref(),
            fields: p
                .fields
                .iter()
                .map(|(name, f)| {
                    let wire = FieldWire {
                        value: &f.value,
                        source: f.source,
                        version: &f.version,
                        conflicts: f
                            .conflicts
                            .iter()
                            .map(|a| AlternativeWire {
                                value: &a.value,
                                source: a.source,
                                version: &a.version,
                            })
                            .collect(),
                    };
                    (name.as_str(), wire)
                })
                .collect(),
            tags: p
                .tags
                .iter()
                .map(|t| TagWire {
                    tag: &t.tag,
                    sources: &t.sources,
                })
                .collect(),
            attributes: &p.attributes,
            related: p
                .related
                .iter()
                .map(|(relation, refs)| {
                    let refs = refs
                        .iter()
                        .map(|r| RefWire {
                            id: &r.id,
                            label: r.label.as_deref(),
                        })
                        .collect();
                    (relation.as_str(), refs)
                })
                .collect(),
            sources: p
                .sources
                .iter()
                .map(|s| SourceWire {
                    department: s.department,
                    source_id: &s.source_id,
                    version: &s.version,
                    received_at: s.received_at,
                })
                .collect(),
            history: &p.history,
        }
        .serialize(serializer)
    }
}

/// The unified id a department's source record merged into.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnifiedId {
    /// The unified id the source record merged into.
    id: String,
}

impl Serialize for Disclosed<UnifiedId> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// One search hit as the caller may see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchItem {
    /// Unified id, for `GET /v1/{kind}s/{id}`.
    pub id: String,
    #[schema(value_type = String)]
    pub kind: RecordKind,
    pub score: f32,
    /// A few fields of the masked profile (name, address, title …), as the profile shows them.
    #[schema(value_type = Object)]
    pub summary: Map<String, Value>,
}

impl Serialize for Disclosed<Vec<SearchItem>> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Loads, scopes, views and audits one entity: `GET /v1/{kind}s/{id}`.
pub async fn entity(
    state: &AppState,
    reader: &Reader,
    kind: RecordKind,
    id: &str,
    endpoint: &str,
) -> Result<Disclosed<Profile>, ApiError> {
    let plan = reader.plan(state);
    let profile = load_visible_profile(state, id, &plan).await?;
    let in_scope = profile
        .as_ref()
        .filter(|p| p.kind == kind)
        .map(|p| covers(&reader.principal, p));
    let action = format!("read_{}", kind.as_str());
    match (profile, in_scope) {
        (Some(mut profile), Some(true)) => {
            let names = names_in(&profile);
            let directory = state.names.current();
            let outcome = plan.apply(&mut profile, &names, Some(&directory));
            let mut record = state.reader_record(reader, &action, endpoint, decision_of(&outcome));
            record.policy_version = Some(plan.policy_version().to_owned());
            record.entities = vec![profile.id.clone()];
            record.residents = resident_refs(state, &profile);
            record.fields_clear = outcome.fields_clear;
            record.result_count = 1;
            state.append_audit(record).await?;
            state
                .sharing
                .disclosed(reader.principal.dept, profile.kind, &profile.sources);
            Ok(Disclosed(profile))
        }
        (profile, in_scope) => {
            let mut record = state.reader_record(reader, &action, endpoint, Decision::Deny);
            record.entities = vec![id.chars().take(64).collect()];
            record.outcome = match (profile.is_some(), in_scope) {
                (true, Some(false)) => "out_of_scope".to_owned(),
                _ => "not_found".to_owned(),
            };
            state.append_audit(record).await?;
            Err(ApiError::not_found())
        }
    }
}

/// The unified id of a department's source record, for a caller who may see that entity:
/// `GET /v1/{kind}s/by-source/{department}/{source_id}`.
pub async fn unified_id(
    state: &AppState,
    reader: &Reader,
    kind: RecordKind,
    department: Department,
    source_id: &str,
) -> Result<Disclosed<UnifiedId>, ApiError> {
    let source_id = source_id.to_owned();
    let entity = with_resolver(state, move |resolver| {
        resolver.entity_of_source(department, kind, &source_id)
    })
    .await?;
    // A caller who may not know that this department holds the record gets the same answer
    // as for a missing record.
    let plan = reader.plan(state);
    // Only the kind and the grid decide the answer, which is an id: no field is opened.
    let profile = match entity {
        Some(entity) if plan.department_visible(department) => {
            with_resolver_inline(state, |resolver| {
                resolver.summary_from(&entity, &|d| plan.department_visible(d), |_| &[])
            })?
        }
        _ => None,
    };
    let endpoint = format!(
        "/v1/{}s/by-source/{{department}}/{{source_id}}",
        kind.as_str()
    );
    let mut record = state.reader_record(reader, "lookup_by_source", &endpoint, Decision::Allow);
    match profile.filter(|p| p.kind == kind && covers(&reader.principal, p)) {
        Some(profile) => {
            record.entities = vec![profile.id.clone()];
            record.result_count = 1;
            state.append_audit(record).await?;
            Ok(Disclosed(UnifiedId { id: profile.id }))
        }
        None => {
            record.decision = Decision::Deny;
            record.outcome = "not_found".to_owned();
            state.append_audit(record).await?;
            Err(ApiError::not_found())
        }
    }
}

/// What a search found, before the gate: index hits (id, kind, score).
#[derive(Debug)]
pub struct Found {
    pub hits: Vec<(String, RecordKind, f32)>,
    pub total: usize,
    pub offset: usize,
}

/// Resolves the hits the index returned, keeps those inside the caller's jurisdiction and
/// visible departments, views each through the plan, and audits the search (action
/// `search`) before the page exists. `summary_fields` picks what each hit shows of its
/// viewed profile; `summary_sources` what is resolved for it.
pub async fn search_hits(
    state: &AppState,
    reader: &Reader,
    plan: &ViewPlan,
    found: Found,
    endpoint: &str,
    summary_sources: fn(RecordKind) -> &'static [&'static str],
    summary: fn(&Profile) -> Map<String, Value>,
) -> Result<Disclosed<Vec<SearchItem>>, ApiError> {
    let job_state = state.clone();
    let principal = reader.principal.clone();
    let job_plan = plan.clone();
    let hits = found.hits;
    let profiles = tokio::task::spawn_blocking(move || {
        let vault = &job_state.vault;
        let snapshot = vault.store.read()?;
        let resolver = Resolver {
            reader: &snapshot,
            keys: &vault.keys,
            authority: &vault.authority,
        };
        let mut profiles = Vec::with_capacity(hits.len());
        for (id, kind, score) in hits {
            // Only what the summary shows is resolved (no related entities but an event's
            // parties, whose names the view redacts from its title); the profile endpoint
            // keeps the full resolution.
            let profile =
                resolver.summary_from(&id, &|d| job_plan.department_visible(d), summary_sources)?;
            if let Some(profile) = profile.filter(|p| p.kind == kind && covers(&principal, p)) {
                profiles.push((profile, score));
            }
        }
        Ok::<_, ResolveError>(profiles)
    })
    .await??;

    let directory = state.names.current();
    let mut decision = Decision::Allow;
    let mut items = Vec::with_capacity(profiles.len());
    let mut residents = Vec::new();
    let mut fields_clear: Vec<String> = Vec::new();
    for (mut profile, score) in profiles {
        let names = names_in(&profile);
        let outcome = plan.apply(&mut profile, &names, Some(&directory));
        state
            .sharing
            .disclosed(reader.principal.dept, profile.kind, &profile.sources);
        if decision_of(&outcome) != Decision::Allow {
            decision = decision_of(&outcome);
        }
        for field in outcome.fields_clear {
            if !fields_clear.contains(&field) {
                fields_clear.push(field);
            }
        }
        residents.extend(resident_refs(state, &profile));
        items.push(SearchItem {
            id: profile.id.clone(),
            kind: profile.kind,
            score,
            summary: summary(&profile),
        });
    }
    let mut record = state.reader_record(reader, "search", endpoint, decision);
    record.policy_version = Some(plan.policy_version().to_owned());
    record.entities = items.iter().map(|i| i.id.clone()).collect();
    record.residents = residents;
    record.fields_clear = fields_clear;
    record.result_count = items.len() as u64;
    record.outcome = format!("total={} offset={}", found.total, found.offset);
    state.append_audit(record).await?;
    Ok(Disclosed(items))
}

/// One change as a subscriber may receive it: a webhook delivery's body, or a feed item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExchangeItem {
    /// Stable per subscription and change: a receiver that sees it twice has it already.
    pub delivery_id: String,
    pub subscription_id: String,
    /// The change's position in the broker's change sequence (commit order).
    pub seq: u64,
    /// `upsert` (the entity as the subscriber may see it now) or `delete` (it is gone, or no
    /// longer the subscriber's to receive).
    pub change: &'static str,
    #[schema(value_type = String)]
    pub kind: RecordKind,
    pub id: String,
    /// The profile as the subscription's agreement lets its department see it; null for a
    /// delete.
    #[schema(value_type = Option<Object>)]
    pub record: Option<Disclosed<Profile>>,
}

impl Serialize for Disclosed<Vec<ExchangeItem>> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// What a change of an entity is to one subscription.
enum ExchangeView {
    /// Its profile, built from the departments the agreement lets it know about, and the
    /// plan to view it through.
    Upsert(Box<(Profile, ViewPlan)>),
    /// It received the entity before and may no longer: a delete.
    Delete(RecordKind),
    /// Not the subscription's.
    Nothing,
}

/// The kind of a unified id, by its prefix.
fn kind_of_id(id: &str) -> Option<RecordKind> {
    match id.split_once('_')?.0 {
        "r" => Some(RecordKind::Resident),
        "h" => Some(RecordKind::House),
        "e" => Some(RecordKind::Event),
        "o" => Some(RecordKind::Organization),
        _ => None,
    }
}

/// Decides what a change of `entity` is to `subscription`: its kinds and types, an
/// agreement of its department for its purpose, its grids.
fn exchange_view(
    resolver: &Resolver<'_>,
    policy: Arc<policies::authz::PolicySet>,
    subscription: &crate::exchange::Subscription,
    entity: &str,
    seen: bool,
) -> Result<ExchangeView, ResolveError> {
    let Some(kind) = kind_of_id(entity).filter(|k| subscription.kinds.contains(k)) else {
        return Ok(ExchangeView::Nothing);
    };
    let gone = if seen {
        ExchangeView::Delete(kind)
    } else {
        ExchangeView::Nothing
    };
    // Kind, type and grid first, from the fields that say them.
    let Some(outline) = resolver.summary_from(entity, &|_| true, |_| &["event_type"])? else {
        return Ok(gone);
    };
    let event_type = outline
        .fields
        .get("type")
        .and_then(|f| f.value.as_str())
        .map(str::to_owned);
    if kind == RecordKind::Event
        && !subscription.types.is_empty()
        && !event_type
            .as_ref()
            .is_some_and(|t| subscription.types.contains(t))
    {
        return Ok(gone);
    }
    let grids = subscription
        .grids
        .iter()
        .filter_map(|g| DivisionCode::parse(g).ok())
        .collect();
    let Some(plan) = ViewPlan::for_agreement(
        policy,
        subscription.department,
        grids,
        kind,
        event_type.as_deref(),
        &subscription.purpose,
    ) else {
        return Ok(gone);
    };
    let Some(profile) = resolver.profile_from(entity, &|d| plan.department_visible(d))? else {
        return Ok(gone);
    };
    let inside = profile
        .grid
        .as_deref()
        .and_then(|g| DivisionCode::parse(g).ok())
        .is_some_and(|g| plan.covers(&g));
    if !inside {
        return Ok(gone);
    }
    Ok(ExchangeView::Upsert(Box::new((profile, plan))))
}

/// Whether a change of `entity` is one `subscription` must receive (no personal data leaves
/// and nothing is audited: only whether).
pub async fn exchange_concerns(
    state: &AppState,
    subscription: &crate::exchange::Subscription,
    entity: &str,
) -> Result<bool, ApiError> {
    let seen = state.exchange.seen(&subscription.id, entity);
    let policy = state.permissions.current();
    let subscription = subscription.clone();
    let entity = entity.to_owned();
    let view = with_resolver(state, move |resolver| {
        exchange_view(resolver, policy, &subscription, &entity, seen)
    })
    .await?;
    Ok(!matches!(view, ExchangeView::Nothing))
}

/// The audit actor of a subscription's webhook deliveries: the subscribing department.
fn subscription_actor(subscription: &crate::exchange::Subscription) -> audit::Actor {
    audit::Actor {
        sub: format!("subscription:{}", subscription.id),
        name: subscription.created_by.clone(),
        roles: vec!["dept_subscriber".to_owned()],
        dept: Some(subscription.department.code().to_owned()),
    }
}

/// Views one change for a subscription and audits it: the webhook body to send, or `None`
/// when the change is not the subscription's (any more).
pub async fn exchange_delivery(
    state: &AppState,
    subscription: &crate::exchange::Subscription,
    seq: u64,
    entity: &str,
    delivery_id: &str,
) -> Result<Option<crate::exchange::ExchangeBody>, ApiError> {
    let seen = state.exchange.seen(&subscription.id, entity);
    let policy = state.permissions.current();
    let job_subscription = subscription.clone();
    let job_entity = entity.to_owned();
    let view = with_resolver(state, move |resolver| {
        exchange_view(resolver, policy, &job_subscription, &job_entity, seen)
    })
    .await?;
    let mut record = audit::AuditRecord::new(
        delivery_id,
        subscription_actor(subscription),
        "exchange_delivery",
        "exchange/webhook",
        Decision::Allow,
    );
    record.purpose = Some(subscription.purpose.clone());
    record.entities = vec![entity.to_owned()];
    record.result_count = 1;
    let item = match view {
        ExchangeView::Nothing => return Ok(None),
        ExchangeView::Delete(kind) => {
            record.outcome = "delete".to_owned();
            ExchangeItem {
                delivery_id: delivery_id.to_owned(),
                subscription_id: subscription.id.clone(),
                seq,
                change: "delete",
                kind,
                id: entity.to_owned(),
                record: None,
            }
        }
        ExchangeView::Upsert(upsert) => {
            let (mut profile, plan) = *upsert;
            let names = names_in(&profile);
            let directory = state.names.current();
            let outcome = plan.apply(&mut profile, &names, Some(&directory));
            state.sharing.disclosed(
                Some(subscription.department),
                profile.kind,
                &profile.sources,
            );
            record.decision = decision_of(&outcome);
            record.policy_version = Some(plan.policy_version().to_owned());
            record.residents = resident_refs(state, &profile);
            record.fields_clear = outcome.fields_clear;
            record.outcome = "upsert".to_owned();
            ExchangeItem {
                delivery_id: delivery_id.to_owned(),
                subscription_id: subscription.id.clone(),
                seq,
                change: "upsert",
                kind: profile.kind,
                id: profile.id.clone(),
                record: Some(Disclosed(profile)),
            }
        }
    };
    state.append_audit(record).await?;
    let upsert = item.record.is_some();
    let body = serde_json::to_vec(&item)
        .map_err(|err| ApiError::internal("delivery_unserialisable", &err))?;
    Ok(Some(crate::exchange::ExchangeBody { body, upsert }))
}

/// Changes scanned at most for one feed page (items that are not the subscription's are
/// skipped, and `next` still moves past them).
pub const FEED_SCAN: usize = 10_000;

/// One page of a subscription's feed after `after`: at most `limit` items, each viewed
/// through the agreement, and the sequence to continue from; audited as one access by the
/// caller (the department's subscriber) with the subscription's purpose.
pub async fn exchange_feed(
    state: &AppState,
    caller: &super::extract::Authenticated,
    subscription: &crate::exchange::Subscription,
    after: u64,
    limit: usize,
) -> Result<(Disclosed<Vec<ExchangeItem>>, u64), ApiError> {
    let policy = state.permissions.current();
    let job_policy = policy.clone();
    let job_state = state.clone();
    let job_subscription = subscription.clone();
    let (views, next) = tokio::task::spawn_blocking(move || {
        let vault = &job_state.vault;
        let snapshot = vault.store.read()?;
        let resolver = Resolver {
            reader: &snapshot,
            keys: &vault.keys,
            authority: &vault.authority,
        };
        let mut views = Vec::new();
        let mut next = after;
        for (seq, entity) in snapshot.changes_after(after, FEED_SCAN)? {
            if views.len() >= limit {
                break;
            }
            next = seq;
            let seen = job_state.exchange.seen(&job_subscription.id, &entity);
            let view = exchange_view(
                &resolver,
                job_policy.clone(),
                &job_subscription,
                &entity,
                seen,
            )?;
            if !matches!(view, ExchangeView::Nothing) {
                views.push((seq, entity, view));
            }
        }
        Ok::<_, ResolveError>((views, next))
    })
    .await??;
    let directory = state.names.current();
    let mut items = Vec::with_capacity(views.len());
    let mut decision = Decision::Allow;
    let mut residents = Vec::new();
    let mut fields_clear: Vec<String> = Vec::new();
    let mut upserted = Vec::new();
    let mut deleted = Vec::new();
    for (seq, entity, view) in views {
        let delivery_id = crate::exchange::delivery_id(&subscription.id, seq);
        match view {
            ExchangeView::Nothing => {}
            ExchangeView::Delete(kind) => {
                deleted.push(entity.clone());
                items.push(ExchangeItem {
                    delivery_id,
                    subscription_id: subscription.id.clone(),
                    seq,
                    change: "delete",
                    kind,
                    id: entity,
                    record: None,
                });
            }
            ExchangeView::Upsert(upsert) => {
                let (mut profile, plan) = *upsert;
                let names = names_in(&profile);
                let outcome = plan.apply(&mut profile, &names, Some(&directory));
                state.sharing.disclosed(
                    Some(subscription.department),
                    profile.kind,
                    &profile.sources,
                );
                if decision_of(&outcome) != Decision::Allow {
                    decision = decision_of(&outcome);
                }
                for field in outcome.fields_clear {
                    if !fields_clear.contains(&field) {
                        fields_clear.push(field);
                    }
                }
                residents.extend(resident_refs(state, &profile));
                upserted.push(entity);
                items.push(ExchangeItem {
                    delivery_id,
                    subscription_id: subscription.id.clone(),
                    seq,
                    change: "upsert",
                    kind: profile.kind,
                    id: profile.id.clone(),
                    record: Some(Disclosed(profile)),
                });
            }
        }
    }
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "exchange_feed",
        "/v1/subscriptions/{id}/feed",
        decision,
    );
    record.purpose = Some(subscription.purpose.clone());
    record.policy_version = Some(policy.version.clone());
    record.entities = items.iter().map(|i| i.id.clone()).collect();
    record.residents = residents;
    record.fields_clear = fields_clear;
    record.result_count = items.len() as u64;
    record.outcome = format!("after={after} next={next}");
    state.append_audit(record).await?;
    state
        .exchange
        .mark_seen(&subscription.id, &upserted, &deleted)?;
    Ok((Disclosed(items), next))
}

/// The merged profile built only from departments the plan lets the caller know about.
async fn load_visible_profile(
    state: &AppState,
    id: &str,
    plan: &ViewPlan,
) -> Result<Option<Profile>, ApiError> {
    if id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(None);
    }
    // One profile is a few B-tree reads against the store's page cache and a few field
    // openings: microseconds, less than handing the work to the blocking pool and back
    // (BENCHMARKS.md, "Against its ceiling"). It runs on the request's own worker.
    with_resolver_inline(state, |resolver| {
        resolver.profile_from(id, &|d| plan.department_visible(d))
    })
}

/// [`with_resolver`] on the calling thread, for reads too short to be worth a thread hop; a
/// panic inside becomes `task_failed` (500) like a failed blocking task, never a dropped
/// connection.
fn with_resolver_inline<T>(
    state: &AppState,
    read: impl FnOnce(&Resolver<'_>) -> Result<T, ResolveError>,
) -> Result<T, ApiError> {
    let run = || resolve_in_snapshot(state, read);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "task_failed",
            "the request could not be completed; try again",
        )),
    }
}

/// Runs `read` on a blocking thread with a resolver over one store snapshot; a failure
/// answers with the error's own status and code (the log gets the cause, the client never
/// does).
async fn with_resolver<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&Resolver<'_>) -> Result<T, ResolveError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || resolve_in_snapshot(&state, read))
        .await?
        .map_err(ApiError::from)
}

/// `read` with a resolver over one store snapshot, on the calling thread.
fn resolve_in_snapshot<T>(
    state: &AppState,
    read: impl FnOnce(&Resolver<'_>) -> Result<T, ResolveError>,
) -> Result<T, ResolveError> {
    let vault = &state.vault;
    let snapshot = vault.store.read()?;
    let resolver = Resolver {
        reader: &snapshot,
        keys: &vault.keys,
        authority: &vault.authority,
    };
    read(&resolver)
}

/// Whether the entity's grid lies inside the principal's jurisdiction.
fn covers(principal: &Principal, profile: &Profile) -> bool {
    profile
        .grid
        .as_deref()
        .and_then(|g| DivisionCode::parse(g).ok())
        .is_some_and(|grid| principal.covers(&grid))
}

/// Keyed references to the residents a profile is about (never the ID numbers).
fn resident_refs(state: &AppState, profile: &Profile) -> Vec<String> {
    if profile.kind != RecordKind::Resident {
        return Vec::new();
    }
    vec![state.vault.audit_reference(&profile.id)]
}

/// Names to redact from a profile's free text: the resident's own names and those of the
/// people related to it.
fn names_in(profile: &Profile) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(field) = profile.fields.get("name") {
        names.extend(field.value.as_str().map(str::to_owned));
        names.extend(
            field
                .conflicts
                .iter()
                .filter_map(|c| c.value.as_str().map(str::to_owned)),
        );
    }
    for relation in ["occupants", "parties"] {
        for entity in profile.related.get(relation).into_iter().flatten() {
            names.extend(entity.label.clone());
        }
    }
    names
}

/// The audit decision of one disclosure: break-glass, clear, or with something cut.
fn decision_of(outcome: &ViewOutcome) -> Decision {
    if outcome.break_glass {
        Decision::BreakGlass
    } else if outcome.masked_or_hidden == 0 {
        Decision::Allow
    } else {
        Decision::Masked
    }
}

#[cfg(test)]
mod tests {
    /// Handlers reach personal data only through this module: no other file of the API
    /// names the resolver, the key ring, the store or the calls that open sealed fields. (The compiler
    /// already keeps the keys out of their reach — the [`super::Vault`] fields are private
    /// here and the pipeline gives its keys to no one; this keeps it that way in review.)
    #[test]
    fn no_handler_outside_the_gate_opens_records() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("src/api is readable") {
            let path = entry.expect("an entry").path();
            if path.file_name().is_some_and(|n| n == "disclosure.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            for forbidden in [
                "Resolver",
                "KeyRing",
                "open_source",
                "profile_from",
                "summary_from",
                ".keys()",
                ".store()",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{} uses {forbidden}: personal data must pass the disclosure gate",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(checked >= 8, "the API's files were found ({checked})");
    }
}
