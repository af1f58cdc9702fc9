//! Who is a minor. Personal information of a child under 14 is sensitive personal information
//! (PIPL arts. 28 and 31): on such a resident's profile the view caps every personal value at
//! the caller's level for the [`MINOR_CLASS`] class ([`crate::view::ViewPlan`]).
//!
//! Guarantees:
//! - [`is_minor`] holds exactly when one of the birth dates a resident profile holds is less
//!   than 14 years before `today`: each value of `birth_date` (the merged value and the
//!   values other departments hold) and the date encoded in each value of `id_number`. A
//!   child is a minor up to the day before its 14th birthday and not on it (one born on
//!   29 February turns 14 on 1 March). When departments disagree, the person is a minor if
//!   any of the dates says so.
//! - A profile that holds no readable birth date (no `birth_date`, no valid ID number) is not
//!   a minor: the broker cannot know, and does not guess from tags or names.
//! - [`is_capped`] names the classes the cap applies to: every class but `public` and
//!   `internal` (a grid code and a house's source id describe a place, not the person).
//! - [`today_in_china`] is the calendar day in China (UTC+8), the day of the read.

use chrono::{FixedOffset, NaiveDate, Utc};
use model::profile::{MergedField, Profile};
use model::{IdNumber, RecordKind};

/// The field class whose level caps every personal value of a minor's profile.
pub const MINOR_CLASS: &str = "minor";

/// Age (in whole years) from which a person is no longer a minor for this rule.
pub const MINOR_AGE: u32 = 14;

/// China Standard Time (no daylight saving).
const CHINA: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// The calendar day in China now.
pub fn today_in_china() -> NaiveDate {
    Utc::now().with_timezone(&CHINA).date_naive()
}

/// Whether the `minor` class caps a value of `class` on a minor's profile.
pub fn is_capped(class: &str) -> bool {
    !matches!(class, "public" | "internal")
}

/// Whether `profile` is a resident who is under 14 on `today` by any birth date it holds.
pub fn is_minor(profile: &Profile, today: NaiveDate) -> bool {
    if profile.kind != RecordKind::Resident {
        return false;
    }
    let stated =
        values(profile.fields.get("birth_date")).filter_map(|text| model::parse_date(text).ok());
    let encoded = values(profile.fields.get("id_number"))
        .filter_map(|text| IdNumber::parse(text).ok())
        .map(|id| id.birth_date());
    stated.chain(encoded).any(|birth| under_age(birth, today))
}

/// Whether a related person with these known birth dates is under 14 on `today`.
pub fn is_minor_by_dates(birth_dates: &[NaiveDate], today: NaiveDate) -> bool {
    birth_dates.iter().any(|birth| under_age(*birth, today))
}

/// Under 14 on `today`; a birth date after `today` counts as under 14 too.
fn under_age(birth: NaiveDate, today: NaiveDate) -> bool {
    today
        .years_since(birth)
        .is_none_or(|years| years < MINOR_AGE)
}

/// The text of a field's value and of every value other departments hold for it.
fn values(field: Option<&MergedField>) -> impl Iterator<Item = &str> {
    field.into_iter().flat_map(|field| {
        std::iter::once(&field.value)
            .chain(field.conflicts.iter().map(|c| &c.value))
            .filter_map(|value| value.as_str())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use model::profile::Alternative;
    use model::Department;
    use serde_json::Value;

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn field(value: &str, conflicts: &[&str]) -> MergedField {
        MergedField {
            value: Value::from(value),
            source: Department::Gongan,
            version: "1".into(),
            conflicts: conflicts
                .iter()
                .map(|c| Alternative {
                    value: Value::from(*c),
                    source: Department::Minzheng,
                    version: "1".into(),
                })
                .collect(),
        }
    }

    fn resident(fields: &[(&str, MergedField)]) -> Profile {
        Profile {
            id: "r_1".into(),
            kind: RecordKind::Resident,
            grid: None,
            fields: fields
                .iter()
                .map(|(n, f)| ((*n).to_owned(), f.clone()))
                .collect::<BTreeMap<_, _>>(),
            tags: vec![],
            attributes: BTreeMap::new(),
            related: BTreeMap::new(),
            sources: vec![],
            history: vec![],
        }
    }

    /// An 18-digit ID number born on `birth` (yyyymmdd).
    fn id_born(birth: &str) -> String {
        let first17 = format!("110105{birth}003");
        format!(
            "{first17}{}",
            model::id_number_check_digit(&first17).unwrap()
        )
    }

    const TODAY: (i32, u32, u32) = (2026, 12, 5);

    fn today() -> NaiveDate {
        day(TODAY.0, TODAY.1, TODAY.2)
    }

    #[test]
    fn fourteen_today_is_not_a_minor_and_fourteen_tomorrow_is() {
        let fourteen_today = resident(&[("birth_date", field("2012-12-05", &[]))]);
        let fourteen_tomorrow = resident(&[("birth_date", field("2012-12-06", &[]))]);
        let ten = resident(&[("birth_date", field("2016-12-05", &[]))]);
        assert!(!is_minor(&fourteen_today, today()));
        assert!(is_minor(&fourteen_tomorrow, today()));
        assert!(is_minor(&ten, today()));
        // The day after, the child of yesterday's example has turned 14.
        assert!(!is_minor(&fourteen_tomorrow, day(2026, 12, 6)));
        // A newborn and an impossible date in the future are both under 14.
        assert!(is_minor(
            &resident(&[("birth_date", field("2026-12-05", &[]))]),
            today()
        ));
        assert!(is_minor(
            &resident(&[("birth_date", field("2027-01-01", &[]))]),
            today()
        ));
    }

    #[test]
    fn born_on_the_29th_of_february_turns_14_on_the_1st_of_march() {
        let leap = resident(&[("birth_date", field("2012-02-29", &[]))]);
        assert!(is_minor(&leap, day(2026, 2, 28)));
        assert!(!is_minor(&leap, day(2026, 3, 1)));
    }

    #[test]
    fn the_id_number_gives_the_birth_date_when_birth_date_is_missing() {
        let child = resident(&[("id_number", field(&id_born("20161205"), &[]))]);
        let adult = resident(&[("id_number", field(&id_born("19800101"), &[]))]);
        assert!(is_minor(&child, today()));
        assert!(!is_minor(&adult, today()));
        // 14 on the day by the ID number alone: not a minor; the day before: a minor.
        let birthday = resident(&[("id_number", field(&id_born("20121205"), &[]))]);
        assert!(!is_minor(&birthday, today()));
        assert!(is_minor(&birthday, day(2026, 12, 4)));
    }

    #[test]
    fn any_birth_date_the_profile_holds_makes_a_minor() {
        // The register's ID says 10, a department states an adult's birth date: a minor.
        let disagreeing = resident(&[
            ("birth_date", field("1990-01-01", &[])),
            ("id_number", field(&id_born("20161205"), &[])),
        ]);
        assert!(is_minor(&disagreeing, today()));
        // A child's date held only as another department's conflicting value still counts.
        let conflict = resident(&[("birth_date", field("1990-01-01", &["2016-12-05"]))]);
        assert!(is_minor(&conflict, today()));
        let adult = resident(&[
            ("birth_date", field("1990-01-01", &["1990-01-02"])),
            ("id_number", field(&id_born("19900101"), &[])),
        ]);
        assert!(!is_minor(&adult, today()));
    }

    #[test]
    fn without_a_readable_birth_date_nobody_is_a_minor() {
        assert!(!is_minor(&resident(&[]), today()));
        let unreadable = resident(&[
            ("birth_date", field("2016", &["昨天"])),
            ("id_number", field("110105********0031", &[])),
            ("name", field("王小明", &[])),
        ]);
        assert!(!is_minor(&unreadable, today()));
        // Only residents are people: a house or an event is never a minor.
        let mut house = resident(&[("birth_date", field("2016-12-05", &[]))]);
        house.kind = RecordKind::House;
        assert!(!is_minor(&house, today()));
    }

    #[test]
    fn every_class_but_public_and_internal_is_capped() {
        for class in crate::CLASSES {
            assert_eq!(
                is_capped(class),
                !["public", "internal"].contains(&class),
                "{class}"
            );
        }
        assert!(crate::CLASSES.contains(&MINOR_CLASS));
    }
}
