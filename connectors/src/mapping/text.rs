//! Value transforms a mapping applies before code tables and dates: full-width and
//! compatibility forms to their standard form, traditional to simplified characters, and
//! whitespace removal.
//!
//! Guarantees: every transform is a pure function of its input and changes only what its name
//! says (case is kept, so an ID number's `X` stays `X`); the character tables are
//! `chinese-text`'s, the same search and linkage fold with, so a value stored simplified here
//! is the value they compare.

/// Full-width letters, digits and punctuation, the ideographic space and other compatibility
/// forms (Unicode NFKC) become their standard form; case and script are unchanged.
pub(crate) fn full_width_to_half_width(input: &str) -> String {
    chinese_text::fold::fold_width(input)
}

/// Removes all whitespace (inner too): identifiers arrive as `110105 1949…` from forms.
pub(crate) fn remove_whitespace(input: &str) -> String {
    input.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Traditional and variant characters become simplified, character by character, from
/// OpenCC's table; a character that is also simplified text (於 as a surname, 乾 in names) is
/// kept. Meant for names, where phrase-level conversion is not needed.
pub(crate) fn traditional_to_simplified(input: &str) -> String {
    chinese_text::fold::simplify(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_common_name_characters() {
        assert_eq!(traditional_to_simplified("張偉"), "张伟");
        assert_eq!(traditional_to_simplified("陳麗紅"), "陈丽红");
        assert_eq!(traditional_to_simplified("劉國華"), "刘国华");
        assert_eq!(
            traditional_to_simplified("黃趙吳周鄭馬孫楊軍東蘭鳳龍雲飛傑"),
            "黄赵吴周郑马孙杨军东兰凤龙云飞杰"
        );
        assert_eq!(traditional_to_simplified("歐陽強"), "欧阳强");
        assert_eq!(traditional_to_simplified("於"), "於");
        assert_eq!(traditional_to_simplified("Li 李"), "Li 李");
    }

    #[test]
    fn folds_full_width() {
        assert_eq!(
            full_width_to_half_width("１１０１０５１９４９１２３１００２Ｘ"),
            "11010519491231002X"
        );
        assert_eq!(full_width_to_half_width("张　三（男）"), "张 三(男)");
        assert_eq!(full_width_to_half_width("張"), "張");
        assert_eq!(remove_whitespace(" 138 1234\t5678 "), "13812345678");
    }
}
