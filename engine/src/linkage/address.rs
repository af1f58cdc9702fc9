//! The parts of a standard address (标准地址) that linkage compares: compound (小区 or
//! community), building, unit and room.
//!
//! Guarantees: [`AddressParts::parse`] never fails and never panics. It reads the address with
//! the one parser of the `chinese-text` crate (the forms departments write: with or without
//! the city or the street, `室` after the room, `栋`/`幢`/`座` for `号楼`, full-width digits,
//! traditional characters, the short form `幸福里一区3-2-501`) and keeps what linkage
//! compares; what it cannot read stays `None` (a part that is `None` is unknown, not
//! different).

/// Compound, building, unit and room of one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressParts {
    /// The compound or community name below the street (`幸福里一区`), without a trailing
    /// `小区` or `社区`.
    pub compound: Option<String>,
    pub building: Option<u32>,
    pub unit: Option<u32>,
    pub room: Option<u32>,
}

impl AddressParts {
    /// Reads an address leniently with `chinese_text::address::parse`.
    pub fn parse(address: &str) -> AddressParts {
        AddressParts::of(&chinese_text::address::parse(address))
    }

    /// The parts of an address `chinese_text::address::parse` has read already.
    pub fn of(parts: &chinese_text::address::AddressParts) -> AddressParts {
        AddressParts {
            compound: parts.compound_name().map(str::to_owned),
            building: parts.building_no(),
            unit: parts.unit_no(),
            room: parts.room_no(),
        }
    }

    /// Whether nothing could be read.
    pub fn is_empty(&self) -> bool {
        self.compound.is_none() && self.building.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_departments_write_read_the_same() {
        let forms = [
            "北京市朝阳区某街道安和里一区3号楼2单元501",
            "朝阳区某街道安和里一区3号楼2单元501室",
            "安和里一区3栋2单元501",
            "安和里一区小区３号楼２单元５０１",
            "北京市朝阳区安和里一区3-2-501",
        ];
        let expected = AddressParts {
            compound: Some("安和里一区".to_owned()),
            building: Some(3),
            unit: Some(2),
            room: Some(501),
        };
        for form in forms {
            assert_eq!(AddressParts::parse(form), expected, "{form}");
        }
    }

    #[test]
    fn what_cannot_be_read_is_unknown() {
        assert!(AddressParts::parse("").is_empty());
        assert!(AddressParts::parse("🏠??").is_empty());
        assert_eq!(AddressParts::parse("安和里一区").building, None);
    }
}
