//! The merged view of one unified entity: every department's source records opened and
//! combined field by field, with provenance.
//!
//! Guarantees:
//! - Each merged field names the department and version it came from; where departments
//!   disagree, the configured per-field authority order decides (公安 first for identity
//!   fields), newer versions break ties within a department, and every differing value stays
//!   visible under `conflicts`.
//! - A sealed field that fails to open (moved, tampered, wrong key) is an error, never a
//!   silently missing value.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use model::profile::{
    Alternative, EntityRef, MergedField, MergedTag, Profile, ScopeMove, SourceRef,
};
use model::record::Version;
use model::{Department, RecordKind};

use vault::crypto::{CryptoError, FieldContext, KeyRing};
use vault::store::{StoreError, StoreReader, StoredSource};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sealed field {field} of a {department} record failed to open: {source}")]
    Integrity {
        department: Department,
        field: String,
        source: CryptoError,
    },
}

/// Which department is trusted first for which field.
#[derive(Debug, Clone)]
pub struct AuthorityOrder {
    /// kind -> field -> order (two levels, so that a lookup allocates nothing).
    per_field: HashMap<String, HashMap<String, Vec<Department>>>,
    default: Vec<Department>,
}

impl Default for AuthorityOrder {
    fn default() -> Self {
        use Department::*;
        let identity = vec![
            Gongan, Minzheng, Weijian, Sifa, Wangge, Zhujian, Chengguan, Yingji,
        ];
        let residence = vec![
            Wangge, Zhujian, Gongan, Minzheng, Weijian, Sifa, Chengguan, Yingji,
        ];
        let contact = vec![
            Gongan, Wangge, Minzheng, Weijian, Sifa, Zhujian, Chengguan, Yingji,
        ];
        let house = vec![
            Zhujian, Wangge, Gongan, Minzheng, Chengguan, Yingji, Weijian, Sifa,
        ];
        let mut order = AuthorityOrder {
            per_field: HashMap::new(),
            default: identity.clone(),
        };
        for field in [
            "id_number",
            "name",
            "gender",
            "birth_date",
            "ethnicity",
            "hukou_address",
        ] {
            order.set(&format!("resident.{field}"), identity.clone());
        }
        for field in ["address", "grid", "house_source_id"] {
            order.set(&format!("resident.{field}"), residence.clone());
        }
        order.set("resident.phone", contact);
        // Organizations: the grid centre's inspections and the street's own registers first,
        // then the departments that license and inspect premises.
        let organization = vec![
            Wangge, Chengguan, Yingji, Zhujian, Gongan, Minzheng, Weijian, Sifa,
        ];
        for field in [
            "name",
            "uscc",
            "type",
            "address",
            "grid",
            "legal_rep_id_number",
            "phone",
        ] {
            order.set(&format!("organization.{field}"), organization.clone());
        }
        for field in ["address", "grid", "usage", "owner_id_number"] {
            order.set(&format!("house.{field}"), house.clone());
        }
        order
    }
}

impl AuthorityOrder {
    /// Overrides the order for one `kind.field` (e.g. `resident.phone`).
    pub fn set(&mut self, kind_field: &str, order: Vec<Department>) {
        let (kind, field) = kind_field.split_once('.').unwrap_or(("", kind_field));
        self.per_field
            .entry(kind.to_owned())
            .or_default()
            .insert(field.to_owned(), order);
    }

    /// Where `department` stands for `kind.field`: 0 is trusted first.
    pub(crate) fn rank(&self, kind: RecordKind, field: &str, department: Department) -> usize {
        let order = self
            .per_field
            .get(kind.as_str())
            .and_then(|fields| fields.get(field))
            .unwrap_or(&self.default);
        order
            .iter()
            .position(|d| *d == department)
            .unwrap_or(order.len())
    }
}

/// A source record with its personal fields opened.
#[derive(Debug)]
pub struct OpenedSource {
    pub stored: StoredSource,
    pub fields: Map<String, Value>,
}

/// Opens every sealed field of a source record.
pub fn open_source(keys: &KeyRing, stored: StoredSource) -> Result<OpenedSource, ResolveError> {
    open_source_fields(keys, stored, None)
}

/// Opens the fields of a source record named in `only` (every field when `None`); the
/// others are left out, sealed fields unopened. `grid` is always kept.
pub fn open_source_fields(
    keys: &KeyRing,
    stored: StoredSource,
    only: Option<&[&str]>,
) -> Result<OpenedSource, ResolveError> {
    let wanted = |field: &str| only.is_none_or(|only| only.contains(&field));
    let row = stored.key();
    let mut fields: Map<String, Value> = stored
        .clear
        .iter()
        .filter(|(k, _)| wanted(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (field, sealed) in stored.sealed.iter().filter(|(k, _)| wanted(k)) {
        let ctx = FieldContext {
            department: stored.department,
            row: &row,
            field,
        };
        let integrity = |source| ResolveError::Integrity {
            department: stored.department,
            field: field.clone(),
            source,
        };
        let plain = keys.open(ctx, sealed).map_err(integrity)?;
        let value =
            serde_json::from_slice(&plain).map_err(|_| integrity(CryptoError::Malformed))?;
        fields.insert(field.clone(), value);
    }
    if let Some(grid) = &stored.grid {
        fields.insert("grid".to_owned(), Value::String(grid.clone()));
    }
    Ok(OpenedSource { stored, fields })
}

/// Builds merged profiles from a read snapshot.
#[derive(Debug)]
pub struct Resolver<'a> {
    pub reader: &'a StoreReader,
    pub keys: &'a KeyRing,
    pub authority: &'a AuthorityOrder,
}

impl Resolver<'_> {
    /// The merged profile of `entity`, or `None` if no live source record forms it.
    pub fn profile(&self, entity: &str) -> Result<Option<Profile>, ResolveError> {
        self.profile_from(entity, &|_| true)
    }

    /// The merged profile of `entity` built only from the source records of departments for
    /// which `visible` holds (a resident whose only records are invisible is `None`).
    pub fn profile_from(
        &self,
        entity: &str,
        visible: &dyn Fn(Department) -> bool,
    ) -> Result<Option<Profile>, ResolveError> {
        let sources = self.reader.linked_sources(&format!("entity:{entity}"))?;
        let Some(kind) = sources.first().map(|s| s.kind) else {
            return Ok(None);
        };
        let opened = sources
            .into_iter()
            .filter(|s| s.kind == kind && visible(s.department))
            .map(|s| open_source(self.keys, s))
            .collect::<Result<Vec<_>, _>>()?;
        if opened.is_empty() {
            return Ok(None);
        }
        let mut profile = merge(entity, kind, &opened, self.authority);
        match kind {
            RecordKind::Resident => {
                if let Some(house) = profile
                    .fields
                    .get("house_source_id")
                    .and_then(|f| f.value.as_str())
                {
                    let id = crate::keyed::house_entity_id(self.keys, house);
                    profile
                        .related
                        .insert("house".to_owned(), vec![EntityRef::bare(id)]);
                }
                let events = self.related_entities(&format!("party:{entity}"), "title")?;
                profile.related.insert("events".to_owned(), events);
                profile.history = scope_history(self.reader, entity)?;
                let owned = self.related_entities(&format!("owner:{entity}"), "address")?;
                if !owned.is_empty() {
                    profile.related.insert("owner_of".to_owned(), owned);
                }
                let represents = self.related_entities(&format!("legal-rep:{entity}"), "name")?;
                if !represents.is_empty() {
                    profile
                        .related
                        .insert("organizations".to_owned(), represents);
                }
            }
            RecordKind::House => {
                let occupants = self.related_entities(&format!("occupant:{entity}"), "name")?;
                profile.related.insert("occupants".to_owned(), occupants);
                let events = self.related_entities(&format!("house-event:{entity}"), "title")?;
                profile.related.insert("events".to_owned(), events);
                let organizations = self.at_premises(&opened, RecordKind::Organization, "name")?;
                if !organizations.is_empty() {
                    profile
                        .related
                        .insert("organizations".to_owned(), organizations);
                }
            }
            RecordKind::Organization => {
                let mut representatives = Vec::new();
                for id in linked_ids(&opened, "legal-rep:") {
                    representatives.extend(
                        self.related_entities(&format!("entity:{id}"), "name")?
                            .into_iter()
                            .next()
                            .or_else(|| Some(EntityRef::bare(id))),
                    );
                }
                profile
                    .related
                    .insert("legal_representative".to_owned(), representatives);
                let premises = self.at_premises(&opened, RecordKind::House, "address")?;
                profile.related.insert("premises".to_owned(), premises);
            }
            RecordKind::Event => {
                let mut house = None;
                for source in &opened {
                    for link in &source.stored.links {
                        if let Some(id) = link.strip_prefix("house-event:") {
                            house = Some(id.to_owned());
                        }
                    }
                }
                let labelled = self.event_parties(&opened)?;
                profile.related.insert("parties".to_owned(), labelled);
                if let Some(id) = house {
                    profile
                        .related
                        .insert("house".to_owned(), vec![EntityRef::bare(id)]);
                }
            }
        }
        Ok(Some(profile))
    }

    /// A lighter profile for a search hit: only the `fields` of the entity's source records
    /// (those of `visible` departments, as [`Self::profile_from`]) are opened and merged, with
    /// `grid` and the source list; tags, attributes and related entities are left out, except
    /// an event's parties, whose names the view redacts from the event's text. Each field
    /// that is present merges exactly as in the full profile.
    pub fn summary_from(
        &self,
        entity: &str,
        visible: &dyn Fn(Department) -> bool,
        fields: fn(RecordKind) -> &'static [&'static str],
    ) -> Result<Option<Profile>, ResolveError> {
        let sources = self.reader.linked_sources(&format!("entity:{entity}"))?;
        let Some(kind) = sources.first().map(|s| s.kind) else {
            return Ok(None);
        };
        let opened = sources
            .into_iter()
            .filter(|s| s.kind == kind && visible(s.department))
            .map(|s| open_source_fields(self.keys, s, Some(fields(kind))))
            .collect::<Result<Vec<_>, _>>()?;
        if opened.is_empty() {
            return Ok(None);
        }
        let mut profile = merge(entity, kind, &opened, self.authority);
        if kind == RecordKind::Event {
            let parties = self.event_parties(&opened)?;
            profile.related.insert("parties".to_owned(), parties);
        }
        Ok(Some(profile))
    }

    /// The entities of `kind` at the same premises (`addrp:` link) as any of `opened`.
    fn at_premises(
        &self,
        opened: &[OpenedSource],
        kind: RecordKind,
        label_field: &str,
    ) -> Result<Vec<EntityRef>, ResolveError> {
        let mut found: BTreeMap<String, EntityRef> = BTreeMap::new();
        for link in linked_ids(opened, "addrp:") {
            for entity in
                self.related_entities_of(&format!("addrp:{link}"), label_field, Some(kind))?
            {
                found.entry(entity.id.clone()).or_insert(entity);
            }
        }
        Ok(found.into_values().collect())
    }

    /// The labelled parties of an event.
    fn event_parties(&self, opened: &[OpenedSource]) -> Result<Vec<EntityRef>, ResolveError> {
        let mut parties = BTreeSet::new();
        for source in opened {
            for link in &source.stored.links {
                if let Some(id) = link.strip_prefix("party:") {
                    parties.insert(id.to_owned());
                }
            }
        }
        let mut labelled = Vec::new();
        for id in parties {
            let party = self
                .related_entities(&format!("entity:{id}"), "name")?
                .into_iter()
                .next();
            labelled.push(match party {
                Some(party) => party,
                // A party no department has published yet: only its id is known.
                None => EntityRef::bare(id),
            });
        }
        Ok(labelled)
    }

    /// The unified id that a department's source record merged into.
    pub fn entity_of_source(
        &self,
        department: Department,
        kind: RecordKind,
        source_id: &str,
    ) -> Result<Option<String>, ResolveError> {
        let row = StoredSource::row_key(department, kind, source_id);
        Ok(self
            .reader
            .source(&row)?
            .filter(|s| !s.deleted)
            .map(|s| s.entity))
    }

    /// Entities reachable from a link, labelled with the best value of `label_field`, with
    /// the departments that hold them and their grid (by the authority order).
    fn related_entities(
        &self,
        link: &str,
        label_field: &str,
    ) -> Result<Vec<EntityRef>, ResolveError> {
        self.related_entities_of(link, label_field, None)
    }

    /// [`Self::related_entities`] of one kind only (`None`: every kind).
    fn related_entities_of(
        &self,
        link: &str,
        label_field: &str,
        only: Option<RecordKind>,
    ) -> Result<Vec<EntityRef>, ResolveError> {
        struct Best {
            label_rank: usize,
            label: Option<String>,
            grid_rank: usize,
            grid: Option<String>,
            departments: Vec<Department>,
            birth_dates: Vec<chrono::NaiveDate>,
        }
        let mut best: BTreeMap<String, Best> = BTreeMap::new();
        for stored in self.reader.linked_sources(link)? {
            if stored.deleted || only.is_some_and(|kind| stored.kind != kind) {
                continue;
            }
            let kind = stored.kind;
            let department = stored.department;
            let entity = stored.entity.clone();
            let grid = stored.grid.clone();
            // Only the label (and, for a person, what tells their age) is read: the other
            // sealed fields stay closed.
            let wanted: &[&str] = if kind == RecordKind::Resident {
                &[label_field, "birth_date", "id_number"]
            } else {
                &[label_field]
            };
            let opened = open_source_fields(self.keys, stored, Some(wanted))?;
            let text = |field: &str| opened.fields.get(field).and_then(Value::as_str);
            let label = text(label_field).map(str::to_owned);
            let birth_dates: Vec<chrono::NaiveDate> = text("birth_date")
                .and_then(|d| model::parse_date(d).ok())
                .into_iter()
                .chain(
                    text("id_number")
                        .and_then(|id| model::IdNumber::parse(id).ok())
                        .map(|id| id.birth_date()),
                )
                .collect();
            let entry = best.entry(entity).or_insert(Best {
                label_rank: usize::MAX,
                label: None,
                grid_rank: usize::MAX,
                grid: None,
                departments: Vec::new(),
                birth_dates: Vec::new(),
            });
            if !entry.departments.contains(&department) {
                entry.departments.push(department);
            }
            for birth in birth_dates {
                if !entry.birth_dates.contains(&birth) {
                    entry.birth_dates.push(birth);
                }
            }
            let rank = self.authority.rank(kind, label_field, department);
            if label.is_some() && rank < entry.label_rank {
                entry.label_rank = rank;
                entry.label = label;
            }
            let grid_rank = self.authority.rank(kind, "grid", department);
            if grid.is_some() && grid_rank < entry.grid_rank {
                entry.grid_rank = grid_rank;
                entry.grid = grid;
            }
        }
        Ok(best
            .into_iter()
            .map(|(id, mut b)| {
                b.departments.sort();
                EntityRef {
                    id,
                    label: b.label,
                    departments: b.departments,
                    grid: b.grid,
                    birth_dates: b.birth_dates,
                }
            })
            .collect())
    }
}

/// The distinct values after `prefix` of the links of `opened` (`legal-rep:<id>` -> ids).
fn linked_ids(opened: &[OpenedSource], prefix: &str) -> BTreeSet<String> {
    opened
        .iter()
        .flat_map(|source| &source.stored.links)
        .filter_map(|link| link.strip_prefix(prefix))
        .map(str::to_owned)
        .collect()
}

/// Merges opened source records of one entity, field by field.
pub fn merge(
    entity: &str,
    kind: RecordKind,
    sources: &[OpenedSource],
    authority: &AuthorityOrder,
) -> Profile {
    let mut candidates: BTreeMap<&str, Vec<(usize, &Version, Department, &Value)>> =
        BTreeMap::new();
    let mut tags: BTreeMap<String, BTreeSet<Department>> = BTreeMap::new();
    let mut attributes: BTreeMap<Department, Map<String, Value>> = BTreeMap::new();
    for source in sources {
        let department = source.stored.department;
        for (field, value) in &source.fields {
            match field.as_str() {
                "tags" => {
                    for tag in value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        tags.entry(tag.to_owned()).or_default().insert(department);
                    }
                }
                "attributes" => {
                    if let Value::Object(map) = value {
                        let entry = attributes.entry(department).or_default();
                        for (k, v) in map {
                            entry.insert(k.clone(), v.clone());
                        }
                    }
                }
                "id_number_legacy" => {}
                _ => {
                    let rank = authority.rank(kind, field, department);
                    candidates.entry(field.as_str()).or_default().push((
                        rank,
                        &source.stored.version,
                        department,
                        value,
                    ));
                }
            }
        }
    }
    let mut fields = BTreeMap::new();
    for (field, mut values) in candidates {
        // Best authority first; within one department, newest version first.
        values.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
        let Some((_, version, source, value)) = values.first().copied() else {
            continue;
        };
        let mut conflicts: Vec<Alternative> = Vec::new();
        for (_, other_version, other_source, other_value) in values.iter().skip(1).copied() {
            if other_value != value && !conflicts.iter().any(|c| &c.value == other_value) {
                conflicts.push(Alternative {
                    value: other_value.clone(),
                    source: other_source,
                    version: other_version.to_string(),
                });
            }
        }
        let name = if field == "event_type" { "type" } else { field };
        fields.insert(
            name.to_owned(),
            MergedField {
                value: value.clone(),
                source,
                version: version.to_string(),
                conflicts,
            },
        );
    }
    let mut source_refs: Vec<SourceRef> = sources
        .iter()
        .map(|s| SourceRef {
            department: s.stored.department,
            source_id: s.stored.source_id.clone(),
            version: s.stored.version.to_string(),
            received_at: s.stored.received_at,
        })
        .collect();
    source_refs.sort_by(|a, b| (a.department, &a.source_id).cmp(&(b.department, &b.source_id)));
    Profile {
        id: entity.to_owned(),
        kind,
        grid: fields
            .get("grid")
            .and_then(|f| f.value.as_str())
            .map(str::to_owned),
        fields,
        tags: tags
            .into_iter()
            .map(|(tag, sources)| MergedTag {
                tag,
                sources: sources.into_iter().collect(),
            })
            .collect(),
        attributes,
        related: BTreeMap::new(),
        sources: source_refs,
        history: Vec::new(),
    }
}

/// The store key of a scope move in the entity's history.
pub fn history_key(moved: &ScopeMove, row: &str) -> String {
    format!(
        "history:{}:{}:{}",
        moved.entity,
        moved.at.format("%Y%m%dT%H%M%S%.6fZ"),
        row
    )
}

/// The scope moves kept for `entity`, oldest first.
pub fn scope_history(
    reader: &vault::store::StoreReader,
    entity: &str,
) -> Result<Vec<ScopeMove>, StoreError> {
    Ok(reader
        .meta_with_prefix(&format!("history:{entity}:"))?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_order_set_for_one_kind_and_field_changes_only_that() {
        let mut order = AuthorityOrder::default();
        assert_eq!(
            order.rank(RecordKind::Resident, "phone", Department::Gongan),
            0
        );
        order.set(
            "resident.phone",
            vec![Department::Minzheng, Department::Gongan],
        );
        // (kind, field, department, rank): a field with no order of its own (an event's
        // title) follows the default (identity) order.
        let expected = [
            (RecordKind::Resident, "phone", Department::Minzheng, 0),
            (RecordKind::Resident, "phone", Department::Gongan, 1),
            (RecordKind::Resident, "phone", Department::Sifa, 2),
            (RecordKind::Resident, "name", Department::Gongan, 0),
            (RecordKind::Organization, "phone", Department::Wangge, 0),
            (RecordKind::Event, "title", Department::Gongan, 0),
        ];
        for (kind, field, department, rank) in expected {
            assert_eq!(
                order.rank(kind, field, department),
                rank,
                "{kind} {field} {department}"
            );
        }
    }

    fn opened(department: Department, version: &str, fields: Value) -> OpenedSource {
        OpenedSource {
            stored: StoredSource {
                kind: RecordKind::Resident,
                department,
                source_id: format!("{department}-1"),
                version: Version::parse(version).unwrap(),
                deleted: false,
                identified: true,
                entity: "r_1".into(),
                grid: None,
                received_at: chrono::Utc::now(),
                batch_id: "b".into(),
                digest: vec![],
                clear: BTreeMap::new(),
                sealed: BTreeMap::new(),
                links: vec![],
            },
            fields: fields.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn gongan_wins_identity_and_disagreement_stays_visible() {
        let sources = vec![
            opened(
                Department::Minzheng,
                "2026-11-05T00:00:00Z",
                json!({"name":"張三","phone":"13900000000","tags":["低保"]}),
            ),
            opened(
                Department::Gongan,
                "2026-11-01T00:00:00Z",
                json!({"name":"张三","phone":"13812345678","tags":["户籍人口"]}),
            ),
            opened(
                Department::Wangge,
                "2026-11-03T00:00:00Z",
                json!({"address":"幸福里3号楼2单元501","tags":["低保"]}),
            ),
        ];
        let profile = merge(
            "r_1",
            RecordKind::Resident,
            &sources,
            &AuthorityOrder::default(),
        );
        let name = &profile.fields["name"];
        assert_eq!(name.value, json!("张三"));
        assert_eq!(name.source, Department::Gongan);
        assert_eq!(name.conflicts[0].value, json!("張三"));
        assert_eq!(name.conflicts[0].source, Department::Minzheng);
        assert_eq!(profile.fields["address"].source, Department::Wangge);
        let dibao = profile.tags.iter().find(|t| t.tag == "低保").unwrap();
        assert_eq!(
            dibao.sources,
            vec![Department::Minzheng, Department::Wangge]
        );
        assert_eq!(profile.sources.len(), 3);
    }

    #[test]
    fn configured_order_changes_the_winner() {
        let sources = vec![
            opened(Department::Minzheng, "1", json!({"phone":"13900000000"})),
            opened(Department::Gongan, "1", json!({"phone":"13812345678"})),
        ];
        let mut order = AuthorityOrder::default();
        order.set(
            "resident.phone",
            vec![Department::Minzheng, Department::Gongan],
        );
        let profile = merge("r_1", RecordKind::Resident, &sources, &order);
        assert_eq!(profile.fields["phone"].source, Department::Minzheng);
    }
}
