//! The identifier types through the public API only: serde inside a containing struct, and
//! that no error path (parse, serde_json text, serde_json values) echoes personal data.

#![allow(clippy::unwrap_used)]

use model::{
    parse_date, parse_timestamp, Department, DivisionCode, DivisionLevel, Gender, IdNumber, Phone,
    PhoneKind,
};
use serde::{Deserialize, Serialize};

const ID: &str = "11010519491231002X";
const MOBILE: &str = "13812345678";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Person {
    id_number: IdNumber,
    phone: Option<Phone>,
    gender: Gender,
    grid: DivisionCode,
    source: Department,
}

fn person() -> Person {
    Person {
        id_number: IdNumber::parse(ID).unwrap(),
        phone: Some(Phone::parse(MOBILE).unwrap()),
        gender: Gender::Female,
        grid: DivisionCode::parse("110105001002003").unwrap(),
        source: Department::Minzheng,
    }
}

#[test]
fn a_struct_round_trips_through_json_text_and_values() {
    let original = person();
    let text = serde_json::to_string(&original).unwrap();
    assert_eq!(
        text,
        r#"{"id_number":"11010519491231002X","phone":"13812345678","gender":"female","grid":"110105001002003","source":"minzheng"}"#
    );
    assert_eq!(serde_json::from_str::<Person>(&text).unwrap(), original);
    let value = serde_json::to_value(&original).unwrap();
    assert_eq!(serde_json::from_value::<Person>(value).unwrap(), original);
}

#[test]
fn input_forms_normalise_on_the_way_in() {
    let text = r#"{"id_number":" 11010519491231002x","phone":"+86 138-1234-5678",
        "gender":"female","grid":"110105001002003","source":"minzheng"}"#;
    assert_eq!(serde_json::from_str::<Person>(text).unwrap(), person());
}

#[test]
fn json_errors_never_echo_personal_data() {
    let cases = [
        (
            r#"{"id_number":"110105194912310021"}"#,
            "110105194912310021",
        ),
        (r#"{"id_number":110105194912310021}"#, "110105194912310021"),
        (r#"{"id_number":1.10105194912310021e17}"#, "1.10105"),
        (
            r#"{"id_number":"11010519491231002X","phone":"1381234567"}"#,
            "1381234567",
        ),
        (
            r#"{"id_number":"11010519491231002X","phone":13812345678}"#,
            "13812345678",
        ),
        (
            r#"{"id_number":"11010519491231002X","phone":-13812345678}"#,
            "13812345678",
        ),
    ];
    for (text, secret) in cases {
        let message = serde_json::from_str::<Person>(text)
            .unwrap_err()
            .to_string();
        assert!(!message.contains(secret), "{message}");
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let message = serde_json::from_value::<Person>(value)
            .unwrap_err()
            .to_string();
        assert!(!message.contains(secret), "{message}");
    }
}

#[test]
fn parse_errors_name_a_code_and_never_the_input() {
    let id_err = IdNumber::parse("110105194912310021").unwrap_err();
    assert_eq!(id_err.code(), "id_number_checksum");
    assert!(!format!("{id_err} {id_err:?}").contains("110105194912310021"));
    let phone_err = Phone::parse("1381234567").unwrap_err();
    assert_eq!(phone_err.code(), "phone_length");
    assert!(!format!("{phone_err} {phone_err:?}").contains("1381234567"));
}

#[test]
fn debug_of_a_record_masks_identifiers() {
    let shown = format!("{:?}", person());
    assert!(!shown.contains(ID), "{shown}");
    assert!(!shown.contains(MOBILE), "{shown}");
    assert!(shown.contains("IdNumber(110105********002X)"), "{shown}");
    assert!(shown.contains("Phone(138****5678)"), "{shown}");
}

#[test]
fn identifiers_agree_with_each_other() {
    let id = IdNumber::parse(ID).unwrap();
    assert_eq!(id.gender(), Gender::Female);
    assert_eq!(Some(id.birth_date()), parse_date("1949年12月31日").ok());
    let district = DivisionCode::parse(id.region_code()).unwrap();
    assert_eq!(district.level(), DivisionLevel::District);
    assert!(district.contains(&person().grid));
    assert_eq!(
        Phone::parse("(010)12345678").unwrap().kind(),
        PhoneKind::Landline
    );
    assert_eq!(
        parse_timestamp("2026-11-01 08:00:00").unwrap(),
        parse_timestamp("2026-11-01T00:00:00Z").unwrap()
    );
}
