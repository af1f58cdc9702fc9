//! SafeGrid's unified model: the resident, house, event and organization records that departments publish,
//! and the Chinese identifiers inside them, each parsed into a type that is known good.
//!
//! Guarantees: every `parse` returns a typed error with a stable `code()` and never panics,
//! whatever the input; a value that has its type is valid (an [`IdNumber`] has a correct
//! GB 11643 check digit and a real birth date, an [`IdentityDocument`] a number that fits its
//! type, a [`DivisionCode`] has 6, 9, 12 or 15 digits).

mod country;
mod date;
mod department;
mod division;
mod gender;
mod id_number;
mod identity_document;
mod phone;
pub mod profile;
pub mod record;
mod uscc;

pub use country::{CountryCode, CountryError};
pub use date::{parse_date, parse_timestamp, DateError};
pub use department::{Department, DepartmentError};
pub use division::{DivisionCode, DivisionError, DivisionLevel};
pub use gender::{Gender, GenderError};
pub use id_number::{
    check_digit as id_number_check_digit, IdNumber, IdNumberDocument, IdNumberError,
};
pub use identity_document::{IdentityDocument, IdentityDocumentError, IdentityDocumentType};
pub use phone::{Phone, PhoneError, PhoneKind};
pub use record::{
    EventRecord, HouseRecord, OrganizationRecord, Record, RecordError, RecordKind, ResidentRecord,
    SourceMeta,
};
pub use uscc::{check_character as uscc_check_character, Uscc, UsccError};
