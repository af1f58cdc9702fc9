//! Standard addresses (标准地址) split into components, so "3号楼2单元" or "幸福里小区3号楼"
//! finds the house and everyone who lives in it.
//!
//! Guarantees: [`parse`] never fails (a fragment yields the components it has), and index
//! and query terms come from the same parse, so a component typed alone matches the same
//! component of a full address.

use crate::fold::{fold, is_cjk};

/// The components of one address; absent components are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressParts {
    pub province: Option<String>,
    pub city: Option<String>,
    pub district: Option<String>,
    pub street: Option<String>,
    /// Community, compound or village name (社区 / 小区 / 村).
    pub compound: Option<String>,
    pub building: Option<String>,
    pub unit: Option<String>,
    pub room: Option<String>,
}

const MUNICIPALITIES: &[&str] = &["北京市", "上海市", "天津市", "重庆市"];
/// Suffixes a worker adds or leaves out of a compound's name.
const COMPOUND_SUFFIXES: &[&str] = &["小区", "社区", "家园", "嘉园", "花园", "公寓", "新村", "村"];

/// Splits `text` (a full address or a fragment) into components.
pub fn parse(text: &str) -> AddressParts {
    let folded: String = fold(text).chars().filter(|c| !c.is_whitespace()).collect();
    let mut parts = AddressParts::default();
    let mut rest: &str = &folded;

    if let Some(m) = MUNICIPALITIES.iter().find(|m| rest.starts_with(**m)) {
        parts.city = Some((*m).to_owned());
        rest = &rest[m.len()..];
    } else if let Some((province, after)) = take_until(rest, &["自治区", "省"], 10) {
        parts.province = Some(province.to_owned());
        rest = after;
        if let Some((city, after)) = take_until(rest, &["自治州", "市", "盟", "地区"], 8) {
            parts.city = Some(city.to_owned());
            rest = after;
        }
    } else if let Some((city, after)) = take_until(rest, &["市"], 6) {
        // "XX市" alone, when followed by a district.
        if take_until(after, &["区", "县"], 6).is_some() {
            parts.city = Some(city.to_owned());
            rest = after;
        }
    }
    if let Some((district, after)) = take_until(rest, &["区", "县", "旗"], 6) {
        // A district only after a city, or right before a street (朝阳区望京街道…):
        // otherwise "幸福里一区" would be read as a district.
        let before_street = take_until(after, &["街道", "镇", "乡"], 8).is_some();
        if parts.city.is_some() || before_street {
            parts.district = Some(district.to_owned());
            rest = after;
        }
    }
    if let Some((street, after)) = take_until(rest, &["街道", "镇", "乡"], 8) {
        parts.street = Some(street.to_owned());
        rest = after;
    }
    let first_digit = rest
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(rest.len());
    let compound = rest[..first_digit].trim_matches(|c: char| !is_cjk(c) && !c.is_alphanumeric());
    if !compound.is_empty() {
        parts.compound = Some(compound.to_owned());
    }
    parse_numbers(&rest[first_digit..], &mut parts);
    parts
}

/// `(head including the marker, rest)` if one of `markers` ends a head of at most
/// `max_chars` characters (and at least two).
fn take_until<'a>(text: &'a str, markers: &[&str], max_chars: usize) -> Option<(&'a str, &'a str)> {
    let mut best: Option<usize> = None;
    for marker in markers {
        if let Some(pos) = text.find(marker) {
            let end = pos + marker.len();
            let chars = text[..end].chars().count();
            if chars >= 2 && chars <= max_chars && text[..pos].chars().all(is_cjk) {
                best = Some(best.map_or(end, |b: usize| b.min(end)));
            }
        }
    }
    best.map(|end| (&text[..end], &text[end..]))
}

/// Building, unit and room from `3号楼2单元501`, `3栋2单元501室`, `3-2-501`, `12号`.
fn parse_numbers(text: &str, parts: &mut AddressParts) {
    let dashed: Vec<&str> = text.split('-').collect();
    if dashed.len() >= 2
        && dashed
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        parts.building = Some(trim_zeros(dashed[0]));
        if dashed.len() == 3 {
            parts.unit = Some(trim_zeros(dashed[1]));
        }
        parts.room = dashed.last().map(|r| trim_zeros(r));
        return;
    }
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            // Skip one non-digit character.
            let skip = rest.chars().next().map_or(1, char::len_utf8);
            rest = &rest[skip..];
            continue;
        }
        let number = trim_zeros(&rest[..digits_end]);
        let after = &rest[digits_end..];
        let (slot, marker_len) = if let Some(m) = ["号楼", "栋", "幢", "号院", "楼"]
            .iter()
            .find(|m| after.starts_with(**m))
        {
            (&mut parts.building, m.len())
        } else if after.starts_with("单元") {
            (&mut parts.unit, "单元".len())
        } else if after.starts_with('室') {
            (&mut parts.room, '室'.len_utf8())
        } else if after.starts_with('号') {
            if parts.building.is_none() {
                (&mut parts.building, '号'.len_utf8())
            } else {
                (&mut parts.room, '号'.len_utf8())
            }
        } else if parts.building.is_some() || parts.unit.is_some() {
            (&mut parts.room, 0)
        } else {
            (&mut parts.building, 0)
        };
        if slot.is_none() {
            *slot = Some(number);
        }
        rest = &after[marker_len..];
    }
}

fn trim_zeros(digits: &str) -> String {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
}

/// Index terms of an address: every component, every prefix of the compound's name (two
/// characters or more) and the compound's name without its suffix.
pub fn index_terms(text: &str) -> Vec<String> {
    let parts = parse(text);
    let mut out = admin_terms(&parts);
    if let Some(compound) = &parts.compound {
        let chars: Vec<char> = compound.chars().collect();
        for n in 2..=chars.len().min(12) {
            out.push(format!("cx:{}", chars[..n].iter().collect::<String>()));
        }
        for word in crate::segment::search_words(compound) {
            if word.chars().count() >= 2 {
                out.push(format!("cw:{word}"));
            }
        }
    }
    out.extend(number_terms(&parts));
    out.sort();
    out.dedup();
    out
}

fn admin_terms(parts: &AddressParts) -> Vec<String> {
    let mut out = Vec::new();
    for (tag, value) in [
        ("pv", &parts.province),
        ("ct", &parts.city),
        ("ds", &parts.district),
        ("st", &parts.street),
    ] {
        if let Some(v) = value {
            out.push(format!("{tag}:{v}"));
        }
    }
    out
}

fn number_terms(parts: &AddressParts) -> Vec<String> {
    let mut out = Vec::new();
    for (tag, value) in [
        ("bd", &parts.building),
        ("un", &parts.unit),
        ("rm", &parts.room),
    ] {
        if let Some(v) = value {
            out.push(format!("{tag}:{v}"));
        }
    }
    out
}

/// What an address typed as a query requires: every group must match, any term of a group
/// may. Unit and room are flagged, because a caller who sees addresses only cut below the
/// building may not search by them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressQuery {
    pub groups: Vec<Vec<String>>,
    pub below_building: bool,
}

/// The query form of an address fragment, or `None` if nothing address-like is in it.
pub fn query_terms(text: &str) -> Option<AddressQuery> {
    let parts = parse(text);
    let mut query = AddressQuery::default();
    for term in admin_terms(&parts) {
        query.groups.push(vec![term]);
    }
    if let Some(compound) = &parts.compound {
        let mut group = vec![format!("cx:{compound}"), format!("cw:{compound}")];
        for suffix in COMPOUND_SUFFIXES {
            if let Some(stem) = compound.strip_suffix(suffix) {
                if stem.chars().count() >= 2 {
                    group.push(format!("cx:{stem}"));
                }
            }
        }
        if compound.chars().count() < 2 {
            return None;
        }
        query.groups.push(group);
    }
    query.below_building = parts.unit.is_some() || parts.room.is_some();
    for term in number_terms(&parts) {
        query.groups.push(vec![term]);
    }
    (!query.groups.is_empty()).then_some(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_style_the_departments_use() {
        let full = parse("北京市朝阳区望京街道幸福里一区3号楼2单元501");
        assert_eq!(full.city.as_deref(), Some("北京市"));
        assert_eq!(full.district.as_deref(), Some("朝阳区"));
        assert_eq!(full.street.as_deref(), Some("望京街道"));
        assert_eq!(full.compound.as_deref(), Some("幸福里一区"));
        assert_eq!(full.building.as_deref(), Some("3"));
        assert_eq!(full.unit.as_deref(), Some("2"));
        assert_eq!(full.room.as_deref(), Some("501"));
        let no_city = parse("朝阳区望京街道阳光嘉园12号楼3单元1102室");
        assert_eq!(no_city.district.as_deref(), Some("朝阳区"));
        assert_eq!(no_city.compound.as_deref(), Some("阳光嘉园"));
        assert_eq!(no_city.room.as_deref(), Some("1102"));
        let dash = parse("北京市朝阳区阳光嘉园12-3-1102");
        assert_eq!(
            (
                dash.building.as_deref(),
                dash.unit.as_deref(),
                dash.room.as_deref()
            ),
            (Some("12"), Some("3"), Some("1102"))
        );
        let fragment = parse("3号楼2单元");
        assert_eq!(fragment.compound, None);
        assert_eq!(
            (fragment.building.as_deref(), fragment.unit.as_deref()),
            (Some("3"), Some("2"))
        );
        let province = parse("河北省保定市竞秀区城关镇东村12号");
        assert_eq!(province.province.as_deref(), Some("河北省"));
        assert_eq!(province.city.as_deref(), Some("保定市"));
        assert_eq!(province.street.as_deref(), Some("城关镇"));
        assert_eq!(province.compound.as_deref(), Some("东村"));
        assert_eq!(province.building.as_deref(), Some("12"));
    }

    #[test]
    fn a_fragment_query_is_a_subset_of_the_full_address_terms() {
        let indexed = index_terms("北京市朝阳区望京街道幸福里一区3号楼2单元501");
        for fragment in [
            "3号楼2单元",
            "幸福里3号楼",
            "幸福里一区3号楼2单元501",
            "幸福里小区3号楼",
        ] {
            let query = query_terms(fragment).expect("address-like");
            for group in &query.groups {
                assert!(
                    group.iter().any(|t| indexed.contains(t)),
                    "{fragment}: {group:?} not in {indexed:?}"
                );
            }
        }
        assert!(query_terms("3号楼2单元").is_some_and(|q| q.below_building));
        assert!(query_terms("幸福里3号楼").is_some_and(|q| !q.below_building));
    }
}
