//! The parts of a standard address (标准地址) that linkage compares: compound (小区 or
//! community), building, unit and room.
//!
//! Guarantees: [`AddressParts::parse`] never fails and never panics. It reads the forms the
//! departments write — `北京市朝阳区望京街道幸福里小区3号楼2单元501`, the same without the
//! city or the street, with `室` after the room, with `栋`/`幢`/`座` for `号楼`, full-width
//! digits, and the short form `幸福里一区3-2-501` — into the same parts; what it cannot read
//! stays `None` (a part that is `None` is unknown, not different).

/// Compound, building, unit and room of one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressParts {
    /// The compound or community name below the street (`幸福里一区`), without a trailing
    /// `小区`.
    pub compound: Option<String>,
    pub building: Option<u32>,
    pub unit: Option<u32>,
    pub room: Option<u32>,
}

/// Administrative prefixes cut, with everything before them, before the compound: every
/// city marker in turn, then the first street marker that occurs.
const CITY_MARKERS: &[&str] = &["自治区", "省", "市"];
const STREET_MARKERS: &[&str] = &["街道办事处", "街道", "镇", "乡"];

impl AddressParts {
    /// Reads an address leniently; see the module documentation for the forms understood.
    pub fn parse(address: &str) -> AddressParts {
        let text = normalise(address);
        let first_digit = text
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(text.len());
        let (place, numbers) = text.split_at(first_digit);
        let compound = compound_of(place);
        let (building, unit, room) = numbers_of(&unify_building_words(numbers));
        AddressParts {
            compound,
            building,
            unit,
            room,
        }
    }

    /// Whether nothing could be read.
    pub fn is_empty(&self) -> bool {
        self.compound.is_none() && self.building.is_none()
    }
}

/// Full-width digits and dashes to ASCII, whitespace removed.
fn normalise(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    for c in address.chars() {
        match c {
            '０'..='９' => {
                out.push(char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c))
            }
            '－' | '—' | '–' | '‐' => out.push('-'),
            _ if c.is_whitespace() => {}
            _ => out.push(c),
        }
    }
    out
}

/// `号楼`, `栋`, `幢`, `座` and `楼` after a building number all become `#`.
fn unify_building_words(numbers: &str) -> String {
    let mut out = numbers.to_owned();
    for variant in ["号楼", "栋", "幢", "座", "楼"] {
        if out.contains(variant) {
            out = out.replace(variant, "#");
        }
    }
    out
}

fn compound_of(place: &str) -> Option<String> {
    let mut rest = place;
    // Province and city names are short, so a 市 deep inside (城市花园) is not a city.
    for marker in CITY_MARKERS {
        if let Some(at) = rest.find(marker) {
            if (1..=5).contains(&rest[..at].chars().count()) {
                rest = &rest[at + marker.len()..];
            }
        }
    }
    // A district (朝阳区, 石景山区, 某某县) is short; a compound ending in 区 (幸福里一区) is
    // kept because nothing would remain after it.
    for marker in ["区", "县"] {
        if let Some(at) = rest.find(marker) {
            let district_chars = rest[..at].chars().count();
            let remains = &rest[at + marker.len()..];
            if (1..=4).contains(&district_chars) && !remains.is_empty() {
                rest = remains;
            }
            break;
        }
    }
    for marker in STREET_MARKERS {
        if let Some(at) = rest.rfind(marker) {
            let remains = &rest[at + marker.len()..];
            if !remains.is_empty() {
                rest = remains;
            }
            break;
        }
    }
    let rest = rest.trim_end_matches(['#', '-', '号']);
    let rest = match rest.strip_suffix("小区") {
        Some(stripped) if stripped.chars().count() >= 2 => stripped,
        _ => rest,
    };
    (!rest.is_empty()).then(|| rest.to_owned())
}

/// Building, unit, room from the part of the address after the compound.
fn numbers_of(text: &str) -> (Option<u32>, Option<u32>, Option<u32>) {
    let mut building = None;
    let mut unit = None;
    let mut room = None;
    let mut loose: Vec<u32> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !c.is_ascii_digit() {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = i + d.len_utf8();
            chars.next();
        }
        let Ok(value) = text[start..end].parse::<u32>() else {
            continue;
        };
        let after = &text[end..];
        if after.starts_with('#') || (after.starts_with('号') && building.is_none()) {
            building = Some(value);
        } else if after.starts_with("单元") {
            unit = Some(value);
        } else {
            loose.push(value);
        }
    }
    // Loose numbers fill the missing parts in order: `3-2-501`, `3#501`, `3#2-501`.
    let mut loose = loose.into_iter();
    if building.is_none() {
        building = loose.next();
    }
    let remaining: Vec<u32> = loose.collect();
    match remaining.as_slice() {
        [] => {}
        [r] => room = Some(*r),
        [u, r, ..] => {
            if unit.is_none() {
                unit = Some(*u);
            }
            room = Some(*r);
        }
    }
    (building, unit, room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(compound: &str, b: u32, u: Option<u32>, r: Option<u32>) -> AddressParts {
        AddressParts {
            compound: Some(compound.to_owned()),
            building: Some(b),
            unit: u,
            room: r,
        }
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
        ] {
            assert_eq!(AddressParts::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn compound_ending_in_qu_survives() {
        let p = AddressParts::parse("北京市朝阳区望京街道幸福里一区12号楼1单元1102");
        assert_eq!(p, parts("幸福里一区", 12, Some(1), Some(1102)));
        let p = AddressParts::parse("北京市朝阳区幸福里一区12-1-1102");
        assert_eq!(p, parts("幸福里一区", 12, Some(1), Some(1102)));
        let p = AddressParts::parse("幸福里一区12号楼");
        assert_eq!(p, parts("幸福里一区", 12, None, None));
    }

    #[test]
    fn rural_and_unreadable_addresses_are_lenient() {
        let p = AddressParts::parse("河南省周口市郸城县胡集乡李庄村12号");
        assert_eq!(p.compound.as_deref(), Some("李庄村"));
        assert_eq!(p.building, Some(12));
        let p = AddressParts::parse("朝阳区望京街道城市花园2号楼301");
        assert_eq!(p, parts("城市花园", 2, None, Some(301)));
        assert!(AddressParts::parse("").is_empty());
        assert!(AddressParts::parse("---").is_empty());
    }
}
