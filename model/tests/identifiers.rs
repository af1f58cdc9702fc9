//! The identifier types through the public API only: serde inside a containing struct, and
//! that no error path (parse, serde_json text, serde_json values) echoes personal data.

#![allow(clippy::unwrap_used)]

use model::{
    parse_date, parse_timestamp, CountryCode, Department, DivisionCode, DivisionLevel, Gender,
    IdNumber, IdNumberDocument, IdentityDocument, IdentityDocumentType, Phone, PhoneKind,
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

/// A Hong Kong resident's residence permit, a foreigner's permanent resident ID card (Saudi
/// national, card issued in Jiangsu) and a passport, as a department would send them.
const PERMIT: &str = "810000199408230021";
const FOREIGNER: &str = "932682198501010017";
const PASSPORT: &str = "E12345678";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Holder {
    id_number: IdNumber,
    #[serde(default)]
    documents: Vec<IdentityDocument>,
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
    for (input, code) in [
        ("810000199408230022", "id_number_checksum"),
        ("811000199408230025", "id_number_permit_region"),
        ("932682198502300017", "id_number_birth_date"),
        ("902682198501010017", "id_number_issuing_province"),
        ("932999198501010017", "id_number_nationality"),
    ] {
        let err = IdNumber::parse(input).unwrap_err();
        assert_eq!(err.code(), code, "{input}");
        assert!(!format!("{err} {err:?}").contains(input), "{input}");
    }
    let doc_err = IdentityDocument::parse("passport", "E1234-5678", Some("CHN")).unwrap_err();
    assert_eq!(doc_err.code(), "document_number_format");
    assert!(!format!("{doc_err} {doc_err:?}").contains("E1234-5678"));
}

#[test]
fn other_documents_of_the_id_number_family_round_trip() {
    let holder = Holder {
        id_number: IdNumber::parse(FOREIGNER).unwrap(),
        documents: vec![IdentityDocument::parse("passport", PASSPORT, Some("SAU")).unwrap()],
    };
    assert_eq!(
        holder.id_number.document(),
        IdNumberDocument::ForeignPermanentResident
    );
    assert_eq!(
        holder.id_number.nationality(),
        CountryCode::parse("SAU").ok()
    );
    let text = serde_json::to_string(&holder).unwrap();
    assert_eq!(
        text,
        r#"{"id_number":"932682198501010017","documents":[{"type":"passport","number":"E12345678","country":"SAU"}]}"#
    );
    assert_eq!(serde_json::from_str::<Holder>(&text).unwrap(), holder);
    let permit: Holder = serde_json::from_str(&format!(r#"{{"id_number":"{PERMIT}"}}"#)).unwrap();
    assert_eq!(
        permit.id_number.document(),
        IdNumberDocument::HongKongMacaoResidencePermit
    );
    assert_eq!(
        IdentityDocument::parse("taiwan_travel_permit", "12345678", None)
            .unwrap()
            .document_type(),
        IdentityDocumentType::TaiwanTravelPermit
    );
}

#[test]
fn json_errors_of_new_documents_never_echo_personal_data() {
    let cases = [
        (
            r#"{"id_number":"811000199408230025"}"#.to_owned(),
            "811000199408230025",
        ),
        (
            r#"{"id_number":932682198501010018}"#.to_owned(),
            "932682198501010018",
        ),
        (
            format!(
                r#"{{"id_number":"{FOREIGNER}","documents":[{{"type":"passport","number":"E1234567","country":"CHN"}}]}}"#
            ),
            "E1234567",
        ),
        (
            format!(
                r#"{{"id_number":"{FOREIGNER}","documents":[{{"type":"passport","number":12345678,"country":"USA"}}]}}"#
            ),
            "12345678",
        ),
        (
            format!(
                r#"{{"id_number":"{FOREIGNER}","documents":[{{"type":"passport","number":"E12345678","country":"CHN","note":"E12345678"}}]}}"#
            ),
            "E12345678",
        ),
    ];
    for (text, secret) in cases {
        let message = serde_json::from_str::<Holder>(&text)
            .unwrap_err()
            .to_string();
        assert!(!message.contains(secret), "{message}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let message = serde_json::from_value::<Holder>(value)
            .unwrap_err()
            .to_string();
        assert!(!message.contains(secret), "{message}");
    }
}

#[test]
fn debug_of_a_holder_masks_every_number() {
    let holder = Holder {
        id_number: IdNumber::parse(FOREIGNER).unwrap(),
        documents: vec![
            IdentityDocument::parse("passport", PASSPORT, Some("CHN")).unwrap(),
            IdentityDocument::parse("hong_kong_macao_travel_permit", "H1234567801", None).unwrap(),
        ],
    };
    let shown = format!("{holder:?}");
    for secret in [
        FOREIGNER,
        "682",
        "19850101",
        PASSPORT,
        "H1234567801",
        "12345678",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("IdNumber(932***********0017)"), "{shown}");
    let permit = format!("{:?}", IdNumber::parse(PERMIT).unwrap());
    assert_eq!(permit, "IdNumber(810000********0021)");
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
