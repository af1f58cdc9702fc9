//! Standard addresses (标准地址) read into the standard address tree — province > city >
//! district > street (街道/镇/乡) > community (社区/村) > compound (小区 …) > building > unit >
//! room — for search ("3号楼2单元" or "幸福里小区3号楼" finds the house and everyone who lives
//! in it) and for linkage (two departments' addresses of one flat compare equal).
//!
//! Guarantees:
//! - [`parse`] never fails and never panics: a fragment yields the parts it has, and a part it
//!   cannot read stays `None` (unknown, not different).
//! - The forms departments write read into the same parts: with or without province, city,
//!   district, street or community; `室` after the room; `号楼`, `栋`, `幢`, `座` or `#` for the
//!   building; full-width digits and dashes; Chinese numerals before a marker (`三单元`); the
//!   short forms `幸福里一区3-2-501` and `3#2-501`.
//! - Building, unit and room are decimal digits without leading zeros (or one letter for a
//!   building written `A座`); [`AddressParts::building_no`] and its siblings read them as
//!   numbers.
//! - Index and query terms come from the same parse, so a part typed alone matches the same
//!   part of a full address.

use crate::fold::{fold, is_cjk};

/// The parts of one address; absent parts are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressParts {
    pub province: Option<String>,
    pub city: Option<String>,
    pub district: Option<String>,
    /// Street (街道), town (镇) or township (乡).
    pub street: Option<String>,
    /// Community (社区) or village (村).
    pub community: Option<String>,
    /// The compound below the community (幸福里小区, 阳光嘉园, 阜通东大街6号院), as written.
    pub compound: Option<String>,
    pub building: Option<String>,
    pub unit: Option<String>,
    pub room: Option<String>,
}

impl AddressParts {
    /// Reads an address; the same as [`parse`].
    pub fn parse(text: &str) -> AddressParts {
        parse(text)
    }

    /// The name linkage compares: the compound without a trailing 小区 or 社区 (幸福里小区 and
    /// 幸福里 are one compound), or the community's when no compound is below it (a village).
    pub fn compound_name(&self) -> Option<&str> {
        let name = self.compound.as_deref().or(self.community.as_deref())?;
        for suffix in ["小区", "社区"] {
            if let Some(stem) = name.strip_suffix(suffix) {
                if stem.chars().count() >= 2 {
                    return Some(stem);
                }
            }
        }
        Some(name)
    }

    /// The building as a number (`None` for a letter or a number beyond `u32`).
    pub fn building_no(&self) -> Option<u32> {
        self.building.as_deref()?.parse().ok()
    }

    /// The unit as a number.
    pub fn unit_no(&self) -> Option<u32> {
        self.unit.as_deref()?.parse().ok()
    }

    /// The room as a number.
    pub fn room_no(&self) -> Option<u32> {
        self.room.as_deref()?.parse().ok()
    }

    /// Whether nothing could be read.
    pub fn is_empty(&self) -> bool {
        *self == AddressParts::default()
    }
}

const MUNICIPALITIES: &[&str] = &["北京市", "上海市", "天津市", "重庆市"];
const STREET_MARKERS: &[&str] = &["街道", "镇", "乡"];
/// Suffixes a worker adds or leaves out of a compound's or community's name.
const COMPOUND_SUFFIXES: &[&str] = &[
    "小区", "社区", "家园", "嘉园", "花园", "公寓", "新村", "村", "苑", "园", "里",
];

/// Reads `text` (a full address or a fragment) into its parts.
pub fn parse(text: &str) -> AddressParts {
    let normalised: String = fold(text)
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '‐' | '‒' | '–' | '—' | '―' | '−' => '-',
            other => other,
        })
        .collect();
    let mut parts = AddressParts::default();
    let rest = read_divisions(&normalised, &mut parts);
    let rest = read_community(rest, &mut parts);
    let tokens = number_tokens(rest);
    let (compound_end, first_number) = compound_end(rest, &tokens);
    let compound = rest[..compound_end].trim_matches(|c: char| !is_cjk(c) && !c.is_alphanumeric());
    if !compound.is_empty() {
        parts.compound = Some(compound.to_owned());
    }
    read_numbers(&tokens[first_number..], &mut parts);
    parts
}

/// Province, city, district and street from the start of `text`; returns the rest.
fn read_divisions<'a>(text: &'a str, parts: &mut AddressParts) -> &'a str {
    let mut rest = text;
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
        // "XX市" alone only when a district follows (城市花园 is a compound).
        if take_until(after, &["区", "县"], 6).is_some() {
            parts.city = Some(city.to_owned());
            rest = after;
        }
    }
    let district_markers: &[&str] = if parts.city.is_some() {
        &["区", "县", "旗", "市"]
    } else {
        &["区", "县", "旗"]
    };
    if let Some((district, after)) = take_until(rest, district_markers, 6) {
        // A district follows a city, or precedes a street, or opens the address and is
        // followed by a place name that is not a number (朝阳区幸福里小区3-2-501): otherwise
        // "幸福里一区3号楼" or "望京西园四区七号楼" would be read as a district.
        let before_street = take_until(after, STREET_MARKERS, 8).is_some();
        let opens = !after.starts_with(|c: char| "一二三四五六七八九十零〇两".contains(c));
        if (parts.city.is_some() || before_street || opens) && names_a_place(after) {
            parts.district = Some(district.to_owned());
            rest = after;
        }
    }
    if let Some((street, after)) = take_until(rest, STREET_MARKERS, 8) {
        // 鱼米之乡小区 and 水乡花园 are compounds, not townships.
        if names_a_place(after) {
            parts.street = Some(street.to_owned());
            rest = after.strip_prefix("办事处").unwrap_or(after);
        }
    }
    rest
}

/// The community or village at the start of `text`, if a compound follows it or nothing
/// does; returns the rest.
fn read_community<'a>(text: &'a str, parts: &mut AddressParts) -> &'a str {
    let Some((community, after)) = take_until(text, &["社区", "村"], 12) else {
        return text;
    };
    if community.ends_with("新村") {
        // 曹杨新村, 阳光新村: in a city a 新村 is a compound, not a village.
        return text;
    }
    let place_follows = names_a_place(after);
    let nothing_follows = !after.starts_with(is_cjk);
    if place_follows || nothing_follows {
        parts.community = Some(community.to_owned());
        after
    } else {
        // 地球村小区: the 村 is part of the compound's name.
        text
    }
}

/// `(head including the marker, rest)` if one of `markers` ends a head of at most
/// `max_chars` characters (and at least two) made of CJK characters only.
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

/// Whether `text` starts with the name of a place: two or more CJK characters that are not
/// only a suffix such as 小区 or 花园.
fn names_a_place(text: &str) -> bool {
    let end = text.find(|c: char| !is_cjk(c)).unwrap_or(text.len());
    let head = &text[..end];
    head.chars().count() >= 2 && !COMPOUND_SUFFIXES.contains(&head)
}

/// What a number in an address is followed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// 号楼, 栋, 幢, 座, #.
    Building,
    /// 单元.
    Unit,
    /// 室.
    Room,
    /// 层: a floor, not stored.
    Floor,
    /// 楼: the building if none is known yet, else a floor.
    BuildingOrFloor,
    /// 号: the building if none is known yet, else the room.
    Number,
    /// 号院, 院, 区, 期, 弄: a part of the compound's name (幸福里4区, 阜通东大街6号院).
    CompoundPart,
    /// A dash or nothing: placed by its position (`3-2-501`).
    Loose,
}

/// Markers, longer before shorter where one begins another.
const MARKERS: &[(&str, Marker)] = &[
    ("号楼", Marker::Building),
    ("号院", Marker::CompoundPart),
    ("单元", Marker::Unit),
    ("栋", Marker::Building),
    ("幢", Marker::Building),
    ("座", Marker::Building),
    ("#", Marker::Building),
    ("室", Marker::Room),
    ("层", Marker::Floor),
    ("楼", Marker::BuildingOrFloor),
    ("号", Marker::Number),
    ("院", Marker::CompoundPart),
    ("区", Marker::CompoundPart),
    ("期", Marker::CompoundPart),
    ("弄", Marker::CompoundPart),
];

/// Markers after which Chinese numerals or a letter are read as a number.
const NUMERAL_MARKERS: &[&str] = &["号楼", "单元", "栋", "幢", "座", "室", "层", "号"];
const LETTER_MARKERS: &[&str] = &["号楼", "栋", "幢", "座"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct NumberToken {
    value: String,
    marker: Marker,
    /// Byte offsets of the number and its marker in the text.
    start: usize,
    end: usize,
}

/// Every number in `text`: digits, Chinese numerals before a marker (`三号楼`), or one letter
/// before a building marker (`a座`), each with the marker that follows it.
fn number_tokens(text: &str) -> Vec<NumberToken> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        let read = if c.is_ascii_digit() {
            let len = text[at..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len() - at);
            Some((trim_zeros(&text[at..at + len]), len))
        } else if is_numeral(c) {
            let len: usize = text[at..]
                .chars()
                .take_while(|c| is_numeral(*c))
                .take(8)
                .map(char::len_utf8)
                .sum();
            let after = &text[at + len..];
            NUMERAL_MARKERS
                .iter()
                .any(|m| after.starts_with(m))
                .then(|| chinese_number(&text[at..at + len]).map(|n| (n.to_string(), len)))
                .flatten()
        } else if c.is_ascii_lowercase() {
            let after = &text[at + 1..];
            let alone = !text[..at].ends_with(|p: char| p.is_ascii_alphanumeric());
            (alone && LETTER_MARKERS.iter().any(|m| after.starts_with(m)))
                .then(|| (c.to_string(), 1))
        } else {
            None
        };
        let Some((value, len)) = read else {
            at += c.len_utf8();
            continue;
        };
        let after = &text[at + len..];
        let (marker, marker_len) = MARKERS
            .iter()
            .find(|(m, _)| after.starts_with(m))
            .map_or((Marker::Loose, 0), |(m, marker)| (*marker, m.len()));
        tokens.push(NumberToken {
            value,
            marker,
            start: at,
            end: at + len + marker_len,
        });
        at += len + marker_len;
    }
    tokens
}

/// Where the compound's name ends in `text`, and the first token after it. A number that is
/// part of the name (幸福里4区, 6号院, 100弄, or a road's 12号 before a building) stays in it,
/// with the text that follows it up to the next number.
fn compound_end(text: &str, tokens: &[NumberToken]) -> (usize, usize) {
    let mut first = 0;
    while let Some(token) = tokens.get(first) {
        let building_follows = tokens[first + 1..]
            .iter()
            .any(|t| t.marker == Marker::Building);
        let in_name = token.marker == Marker::CompoundPart
            || (token.marker == Marker::Number && building_follows);
        if !in_name {
            break;
        }
        first += 1;
    }
    let end = tokens.get(first).map_or(text.len(), |t| t.start);
    (end, first)
}

/// Building, unit and room from the numbers after the compound. A marked number goes where
/// its marker says; a loose one to the next level, the last one of a run to the room
/// (`3-501` is building 3, room 501; `3-2-501` has a unit).
fn read_numbers(tokens: &[NumberToken], parts: &mut AddressParts) {
    enum Level {
        Building,
        Unit,
        Room,
        Done,
    }
    fn set(slot: &mut Option<String>, value: &str) {
        if slot.is_none() {
            *slot = Some(value.to_owned());
        }
    }
    let mut next = Level::Building;
    for (i, token) in tokens.iter().enumerate() {
        let value = token.value.as_str();
        let more_loose = tokens[i + 1..].iter().any(|t| t.marker == Marker::Loose);
        match token.marker {
            Marker::Building => {
                set(&mut parts.building, value);
                next = Level::Unit;
            }
            Marker::BuildingOrFloor | Marker::Number if parts.building.is_none() => {
                set(&mut parts.building, value);
                next = Level::Unit;
            }
            Marker::Unit => {
                set(&mut parts.unit, value);
                next = Level::Room;
            }
            Marker::Room | Marker::Number => {
                set(&mut parts.room, value);
                next = Level::Done;
            }
            Marker::Floor | Marker::BuildingOrFloor | Marker::CompoundPart => {}
            Marker::Loose => match next {
                Level::Building => {
                    set(&mut parts.building, value);
                    next = Level::Unit;
                }
                Level::Unit if more_loose => {
                    set(&mut parts.unit, value);
                    next = Level::Room;
                }
                Level::Unit | Level::Room => {
                    set(&mut parts.room, value);
                    next = Level::Done;
                }
                Level::Done => {}
            },
        }
    }
}

fn is_numeral(c: char) -> bool {
    numeral_digit(c).is_some() || matches!(c, '十' | '百' | '千')
}

fn numeral_digit(c: char) -> Option<u64> {
    let digit = match c {
        '零' | '〇' => 0,
        '一' => 1,
        '二' | '两' => 2,
        '三' => 3,
        '四' => 4,
        '五' => 5,
        '六' => 6,
        '七' => 7,
        '八' => 8,
        '九' => 9,
        _ => return None,
    };
    Some(digit)
}

/// `三` 3, `十二` 12, `二十` 20, `一百零一` 101, `五零一` 501.
fn chinese_number(numerals: &str) -> Option<u64> {
    let positional = numerals.chars().any(|c| matches!(c, '十' | '百' | '千'));
    let mut total: u64 = 0;
    let mut current: Option<u64> = None;
    for c in numerals.chars() {
        match (c, numeral_digit(c)) {
            (_, Some(d)) if positional => current = Some(d),
            (_, Some(d)) => total = total.checked_mul(10)?.checked_add(d)?,
            ('十', _) => total += current.take().unwrap_or(1) * 10,
            ('百', _) => total += current.take()? * 100,
            ('千', _) => total += current.take()? * 1000,
            _ => return None,
        }
    }
    Some(total + current.unwrap_or(0))
}

fn trim_zeros(digits: &str) -> String {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
}

/// Index terms of an address: every division, every prefix (two characters or more) and
/// every word of the community's and the compound's names, and the numbers.
pub fn index_terms(text: &str) -> Vec<String> {
    let parts = parse(text);
    let mut out = division_terms(&parts);
    // Departments disagree whether a name is a community or a compound: both index alike.
    for place in [&parts.community, &parts.compound].into_iter().flatten() {
        let chars: Vec<char> = place.chars().collect();
        for n in 2..=chars.len().min(12) {
            out.push(format!("cx:{}", chars[..n].iter().collect::<String>()));
        }
        for word in crate::segment::search_words(place) {
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

fn division_terms(parts: &AddressParts) -> Vec<String> {
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
    for term in division_terms(&parts) {
        query.groups.push(vec![term]);
    }
    for place in [&parts.community, &parts.compound].into_iter().flatten() {
        if place.chars().count() < 2 {
            return None;
        }
        let mut group = vec![format!("cx:{place}"), format!("cw:{place}")];
        for suffix in COMPOUND_SUFFIXES {
            if let Some(stem) = place.strip_suffix(suffix) {
                if stem.chars().count() >= 2 {
                    group.push(format!("cx:{stem}"));
                }
            }
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
    use proptest::prelude::*;

    fn numbers(p: &AddressParts) -> (Option<u32>, Option<u32>, Option<u32>) {
        (p.building_no(), p.unit_no(), p.room_no())
    }

    #[test]
    fn parses_the_whole_tree() {
        let full = parse("北京市朝阳区望京街道幸福里一区3号楼2单元501");
        assert_eq!(full.city.as_deref(), Some("北京市"));
        assert_eq!(full.district.as_deref(), Some("朝阳区"));
        assert_eq!(full.street.as_deref(), Some("望京街道"));
        assert_eq!(full.community, None);
        assert_eq!(full.compound.as_deref(), Some("幸福里一区"));
        assert_eq!(numbers(&full), (Some(3), Some(2), Some(501)));
        let with_community = parse("北京市朝阳区望京街道花家地社区花家地北里3号楼2单元501室");
        assert_eq!(with_community.community.as_deref(), Some("花家地社区"));
        assert_eq!(with_community.compound.as_deref(), Some("花家地北里"));
        assert_eq!(numbers(&with_community), (Some(3), Some(2), Some(501)));
        let no_city = parse("朝阳区望京街道阳光嘉园12号楼3单元1102室");
        assert_eq!(no_city.district.as_deref(), Some("朝阳区"));
        assert_eq!(no_city.compound.as_deref(), Some("阳光嘉园"));
        assert_eq!(no_city.room.as_deref(), Some("1102"));
        let dash = parse("北京市朝阳区阳光嘉园12-3-1102");
        assert_eq!(numbers(&dash), (Some(12), Some(3), Some(1102)));
        let fragment = parse("3号楼2单元");
        assert_eq!(fragment.compound, None);
        assert_eq!(numbers(&fragment), (Some(3), Some(2), None));
        let province = parse("河北省保定市竞秀区城关镇东村12号");
        assert_eq!(province.province.as_deref(), Some("河北省"));
        assert_eq!(province.city.as_deref(), Some("保定市"));
        assert_eq!(province.district.as_deref(), Some("竞秀区"));
        assert_eq!(province.street.as_deref(), Some("城关镇"));
        assert_eq!(province.community.as_deref(), Some("东村"));
        assert_eq!(province.compound, None);
        assert_eq!(province.compound_name(), Some("东村"));
        assert_eq!(province.building.as_deref(), Some("12"));
    }

    #[test]
    fn a_district_may_open_the_address_but_a_numbered_section_is_no_district() {
        let p = parse("海淀区安和里小区3-2-501");
        assert_eq!(p.district.as_deref(), Some("海淀区"));
        assert_eq!(p.compound_name(), Some("安和里"));
        assert_eq!(numbers(&p), (Some(3), Some(2), Some(501)));
        let p = parse("青松园四区七号楼");
        assert_eq!(p.district, None);
        assert_eq!(p.compound.as_deref(), Some("青松园四区"));
        let p = parse("青松园四区3号楼");
        assert_eq!(p.district, None);
        assert_eq!(p.compound.as_deref(), Some("青松园四区"));
    }

    #[test]
    fn reads_more_forms() {
        let p = parse("幸福里小区三号楼二单元五零一室");
        assert_eq!(numbers(&p), (Some(3), Some(2), Some(501)));
        let p = parse("阳光嘉园十二号楼");
        assert_eq!(
            (p.compound.as_deref(), p.building_no()),
            (Some("阳光嘉园"), Some(12))
        );
        let p = parse("朝阳区望京街道阜通东大街6号院3号楼2单元501");
        assert_eq!(p.compound.as_deref(), Some("阜通东大街6号院"));
        assert_eq!(numbers(&p), (Some(3), Some(2), Some(501)));
        let p = parse("幸福里4区3号楼501");
        assert_eq!(p.compound.as_deref(), Some("幸福里4区"));
        assert_eq!(numbers(&p), (Some(3), None, Some(501)));
        let p = parse("阳光嘉园3号楼5层501");
        assert_eq!(numbers(&p), (Some(3), None, Some(501)));
        let p = parse("阳光嘉园2单元501");
        assert_eq!(numbers(&p), (None, Some(2), Some(501)));
        let p = parse("阳光嘉园3#2-501");
        assert_eq!(numbers(&p), (Some(3), Some(2), Some(501)));
        let p = parse("科技园Ａ座1001");
        assert_eq!(p.compound.as_deref(), Some("科技园"));
        assert_eq!(
            (p.building.as_deref(), p.building_no(), p.room_no()),
            (Some("a"), None, Some(1001))
        );
        let p = parse("鱼米之乡小区3号楼");
        assert_eq!(
            (p.street, p.compound.as_deref()),
            (None, Some("鱼米之乡小区"))
        );
        let p = parse("阳光新村3号楼");
        assert_eq!(
            (p.community, p.compound.as_deref()),
            (None, Some("阳光新村"))
        );
        let p = parse("地球村小区3号楼");
        assert_eq!(
            (p.community, p.compound.as_deref()),
            (None, Some("地球村小区"))
        );
        let p = parse("北京市幸福里一区12-1-1102");
        assert_eq!(
            (p.district, p.compound.as_deref()),
            (None, Some("幸福里一区"))
        );
        let p = parse("朝阳区望京街道办事处幸福里小区3号楼");
        assert_eq!(p.street.as_deref(), Some("望京街道"));
        assert_eq!(p.compound_name(), Some("幸福里"));
        assert!(parse("").is_empty());
        assert!(parse("---").is_empty());
        assert_eq!(parse("幸福里99999999999号楼").building_no(), None);
    }

    // Ported from the linkage parser (engine/src/linkage/address.rs).
    fn parts(
        compound: &str,
        b: u32,
        u: Option<u32>,
        r: Option<u32>,
    ) -> (Option<String>, Option<u32>, Option<u32>, Option<u32>) {
        (Some(compound.to_owned()), Some(b), u, r)
    }

    fn linkage_view(text: &str) -> (Option<String>, Option<u32>, Option<u32>, Option<u32>) {
        let p = parse(text);
        (
            p.compound_name().map(str::to_owned),
            p.building_no(),
            p.unit_no(),
            p.room_no(),
        )
    }

    #[test]
    fn reads_every_department_form() {
        let expected = parts("幸福里", 3, Some(2), Some(501));
        for text in [
            "北京市朝阳区望京街道幸福里小区3号楼2单元501",
            "朝阳区望京街道幸福里小区3号楼2单元501室",
            "北京市朝阳区幸福里小区3-2-501",
            "幸福里小区３号楼２单元５０１",
            "北京市朝阳区望京街道幸福里3栋2单元501",
            "幸福里小区3幢2单元501室",
            "幸福里小区3座2单元501",
            "幸福里小区３－２－５０１",
        ] {
            assert_eq!(linkage_view(text), expected, "{text}");
        }
    }

    #[test]
    fn compound_ending_in_qu_survives() {
        assert_eq!(
            linkage_view("北京市朝阳区望京街道幸福里一区12号楼1单元1102"),
            parts("幸福里一区", 12, Some(1), Some(1102))
        );
        assert_eq!(
            linkage_view("北京市朝阳区幸福里一区12-1-1102"),
            parts("幸福里一区", 12, Some(1), Some(1102))
        );
        assert_eq!(
            linkage_view("幸福里一区3-2-501"),
            parts("幸福里一区", 3, Some(2), Some(501))
        );
        assert_eq!(
            linkage_view("幸福里一区12号楼"),
            parts("幸福里一区", 12, None, None)
        );
    }

    #[test]
    fn rural_and_unreadable_addresses_are_lenient() {
        let p = parse("河南省周口市郸城县胡集乡李庄村12号");
        assert_eq!(p.compound_name(), Some("李庄村"));
        assert_eq!(p.building_no(), Some(12));
        assert_eq!(
            linkage_view("朝阳区望京街道城市花园2号楼301"),
            parts("城市花园", 2, None, Some(301))
        );
        assert!(parse("").is_empty());
        assert!(parse("---").is_empty());
    }

    #[test]
    fn a_fragment_query_is_a_subset_of_the_full_address_terms() {
        let indexed = index_terms("北京市朝阳区望京街道幸福里一区3号楼2单元501");
        for fragment in [
            "3号楼2单元",
            "幸福里3号楼",
            "幸福里一区3号楼2单元501",
            "幸福里小区3号楼",
            "幸福里社区3号楼",
            "望京街道幸福里",
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

    proptest! {
        #[test]
        fn parse_never_panics_and_numbers_are_digits(text in "[0-9０-９一二三十百零两a-zＡ-Ｚ号楼栋幢座单元室层区院期弄村社小镇乡街道省市县#\\-－ 幸福里]{0,30}") {
            let p = parse(&text);
            for value in [&p.building, &p.unit, &p.room].into_iter().flatten() {
                prop_assert!(!value.is_empty());
                prop_assert!(value.chars().all(|c| c.is_ascii_digit()) || value.chars().all(|c| c.is_ascii_lowercase()));
                prop_assert!(value == "0" || !value.starts_with('0'));
            }
            let _ = index_terms(&text);
            let _ = query_terms(&text);
        }
    }
}
