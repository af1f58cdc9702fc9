//! The demo's synthetic department copies as linkage reads them, for the engine's linkage
//! test and benchmark (the demo crate may not know the engine).

use demo::synthetic::{RawResident, SyntheticSet};
use engine::linkage::record::link_records as normalise_all;
use engine::linkage::{LinkInput, LinkRecord};

/// One synthetic copy as linkage reads it.
pub fn input(r: &RawResident) -> LinkInput<'_> {
    LinkInput {
        department: r.department,
        row_key: &r.row_key,
        id_number: r.id_number.as_deref(),
        name: Some(&r.name),
        birth_date: r.birth_date,
        gender: r.gender,
        phone: r.phone.as_deref(),
        address: Some(&r.address),
        grid: Some(&r.grid),
    }
}

/// Every copy normalised for linkage, on every core.
pub fn link_records(set: &SyntheticSet) -> Vec<LinkRecord> {
    let inputs: Vec<LinkInput<'_>> = set.residents.iter().map(input).collect();
    normalise_all(&inputs)
}
