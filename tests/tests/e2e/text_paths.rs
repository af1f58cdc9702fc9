//! Arbitrary Unicode through every text path the broker runs on outside input — folding,
//! pinyin, names, segmentation, masking, redaction, index and query terms, linkage keys and
//! comparisons, address parsing — never panics (a panic there once stopped the search
//! follower). Every CJK block and extension, compatibility ideographs, radicals, combining
//! marks, pinyin tone letters, astral planes, control characters, empty and very long strings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chinese_text::{fold, hanzi, names, segment as text};
use engine::linkage::{address, blocking, compare, record::LinkRecord};

use model::{Department, ResidentRecord};
use policies::{mask, redact};
use proptest::prelude::*;

/// Characters from the ranges that matter, weighted towards Chinese text.
fn any_char() -> impl Strategy<Value = char> {
    let ranges: Vec<(u32, u32)> = vec![
        (0x4E00, 0x9FFF),   // CJK unified ideographs
        (0x3400, 0x4DBF),   // extension A
        (0x20000, 0x2A6DF), // extension B
        (0x2A700, 0x2EBEF), // extensions C–F
        (0x30000, 0x3134F), // extension G
        (0xF900, 0xFAFF),   // compatibility ideographs
        (0x2F800, 0x2FA1F), // compatibility supplement
        (0x2E80, 0x2FDF),   // radicals
        (0x3000, 0x303F),   // CJK symbols and punctuation
        (0xFF00, 0xFFEF),   // full-width forms
        (0x0300, 0x036F),   // combining marks
        (0x0000, 0x001F),   // control characters
        (0x007F, 0x009F),
        (0x1F300, 0x1FAFF), // astral symbols
        (0xE000, 0xF8FF),   // private use
        (0x0020, 0x007E),   // ASCII
        (0x00C0, 0x024F),   // Latin with diacritics
    ];
    let tone_letters: Vec<char> = "āáǎàēéěèêếềḿńňǹüǘǚǜ·•・".chars().collect();
    prop_oneof![
        6 => prop::sample::select(ranges).prop_flat_map(|(lo, hi)| lo..=hi)
            .prop_filter_map("a scalar value", char::from_u32),
        1 => prop::sample::select(tone_letters),
        1 => prop::sample::select("欸嗯呣哼噷姆单曾解区朴查欧阳司马諸葛王張".chars().collect::<Vec<_>>()),
        1 => prop::sample::select("0123456789X号楼单元室栋幢弄巷路街村社区小区".chars().collect::<Vec<_>>()),
    ]
}

fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any_char(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

/// Runs every text path over `input`; returns nothing, panics only on a bug.
fn every_path(input: &str) {
    let _ = fold::fold(input);
    for c in input.chars() {
        let _ = fold::fold_char(c);
        for reading in names::readings(c) {
            assert!(reading.bytes().all(|b| b.is_ascii_lowercase()), "{reading}");
        }
    }
    if let Some(split) = names::split_name(input) {
        let _ = names::name_readings(&split);
    }
    let _ = names::name_terms(input);
    let _ = names::segment_pinyin(input);
    let _ = names::fuzzy_query_term(input);
    let _ = text::index_terms(input);
    let _ = text::search_words(input);
    let _ = text::query_words(input);
    let _ = text::masked_terms(input);
    for range in text::person_name_spans(input) {
        assert!(
            input.get(range.clone()).is_some(),
            "span {range:?} off a char boundary"
        );
    }
    let _ = chinese_text::address::parse(input);
    let _ = chinese_text::address::index_terms(input);
    let _ = chinese_text::address::query_terms(input);
    let _ = address::AddressParts::parse(input);
    let _ = hanzi::fold_name(input);
    let _ = hanzi::name_readings(input);
    let _ = hanzi::surname_len(input);
    for masker in [
        mask::mask_id_number,
        mask::mask_phone,
        mask::mask_name,
        mask::mask_address,
        mask::mask_birth_date,
    ] {
        let _ = masker(input);
    }
    let directory = redact::NameDirectory::new([input]);
    let _ = redact::redact(
        input,
        &[input],
        Some(&directory),
        Some(&text::person_name_spans),
    );
    let resident = ResidentRecord {
        name: Some(input.to_owned()),
        address: Some(input.to_owned()),
        hukou_address: Some(input.to_owned()),
        ..ResidentRecord::default()
    };
    let a = LinkRecord::from_resident(Department::Minzheng, "minzheng/resident/1", &resident);
    let b = LinkRecord::from_resident(Department::Weijian, "weijian/resident/1", &resident);
    let _ = blocking::blocking_keys(&a);
    let _ = compare::ComparisonVector::compare(&a, &b);
    let _ = compare::compare_names(&a, &b);
    let _ = compare::compare_addresses(&a, &b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_text_path_panics_on_short_strings(input in any_text(24)) {
        every_path(&input);
    }

    #[test]
    fn no_text_path_panics_on_longer_strings(input in any_text(400)) {
        every_path(&input);
    }
}

#[test]
fn no_text_path_panics_on_edge_cases() {
    let long_cjk: String = "张".repeat(10_000);
    let long_mixed: String = "王\u{0301}欸1a\u{0000}𠀀".repeat(2_000);
    for input in [
        "",
        " ",
        "\u{0000}",
        "\u{FEFF}",
        "欸",
        "嗯",
        "ḿ",
        "m\u{0300}",
        "ê\u{0304}",
        "欧",
        "欧阳",
        "·",
        "𪚥𪚥𪚥",
        long_cjk.as_str(),
        long_mixed.as_str(),
    ] {
        every_path(input);
    }
}
