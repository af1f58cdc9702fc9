//! Organization names (晨光便利店, 北京某某科技有限公司) for search: found by any word of the
//! name, by the name's characters, and by pinyin the way a grid worker types it on a phone —
//! the initials of the whole name (`cgbld`), their beginning (`cg`), or a word's full pinyin
//! (`bianlidian`).
//!
//! Guarantees: index and query terms come from the same folding (traditional, full-width
//! and case folded, as [`crate::fold::fold`]); every pinyin term is ASCII lower case; nothing
//! here panics on any input; the pinyin terms come from at most 32 characters of the name.

use crate::fold::{fold, is_cjk};
use crate::reading::readings;
use crate::segment;

/// Longest initials prefix indexed (a longer typed prefix must be the whole initials).
pub const MAX_INITIALS_PREFIX: usize = 8;
/// Characters of a name that pinyin terms are built from (the rest still count as words).
const MAX_PINYIN_CHARS: usize = 32;

/// The primary reading of each CJK character of `text`, in order; a Latin letter or a
/// digit stands for itself.
fn syllables(text: &str) -> Vec<String> {
    text.chars()
        .filter(|c| is_cjk(*c) || c.is_ascii_alphanumeric())
        .take(MAX_PINYIN_CHARS)
        .filter_map(|c| {
            if c.is_ascii_alphanumeric() {
                Some(c.to_ascii_lowercase().to_string())
            } else {
                readings(c).into_iter().next()
            }
        })
        .collect()
}

/// The index terms of an organization's name: `n:` the whole folded name, the words (`w:`)
/// and CJK bigrams (`g:`) as event text has them, `i:` the initials of the whole name, `p:`
/// each beginning of them from two letters, `y:` the full pinyin and `wi:` the initials of
/// each word (`bld` finds every 便利店).
pub fn index_terms(name: &str) -> Vec<String> {
    let folded: String = fold(name).chars().filter(|c| !c.is_whitespace()).collect();
    if folded.is_empty() {
        return Vec::new();
    }
    let mut out = vec![format!("n:{folded}")];
    out.extend(segment::index_terms(&folded));
    let initials: String = syllables(&folded)
        .iter()
        .filter_map(|s| s.chars().next())
        .collect();
    if initials.len() >= 2 {
        out.push(format!("i:{initials}"));
        for end in 2..initials.len().min(MAX_INITIALS_PREFIX + 1) {
            out.push(format!("p:{}", &initials[..end]));
        }
    }
    for word in segment::search_words(&folded) {
        if !word.chars().any(is_cjk) {
            continue;
        }
        let readings = syllables(&word);
        let pinyin: String = readings.concat();
        if pinyin.len() >= 2 {
            out.push(format!("y:{pinyin}"));
        }
        let initials: String = readings.iter().filter_map(|s| s.chars().next()).collect();
        if initials.len() >= 2 {
            out.push(format!("wi:{initials}"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The terms a typed string of Latin letters may match in [`index_terms`], best first: the
/// whole initials, a word's full pinyin, a beginning of the initials, a word's initials.
pub fn pinyin_query_terms(letters: &str) -> Vec<String> {
    let letters = letters.to_ascii_lowercase();
    if letters.len() < 2 || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return Vec::new();
    }
    let mut out = vec![format!("i:{letters}"), format!("y:{letters}")];
    if letters.len() <= MAX_INITIALS_PREFIX {
        out.push(format!("p:{letters}"));
    }
    out.push(format!("wi:{letters}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shop_is_found_by_its_words_initials_and_pinyin() {
        let terms = index_terms("晨光便利店");
        for expected in [
            "n:晨光便利店",
            "i:cgbld",
            "p:cg",
            "p:cgbl",
            "g:便利",
            "wi:bld",
        ] {
            assert!(terms.iter().any(|t| t == expected), "{expected}: {terms:?}");
        }
        assert!(terms.iter().any(|t| t.starts_with("w:")), "{terms:?}");
        assert!(
            terms.iter().any(|t| t == "y:bianlidian" || t == "y:bianli"),
            "{terms:?}"
        );
        for term in pinyin_query_terms("cgbld") {
            if term.starts_with("i:") {
                assert!(terms.contains(&term));
            }
        }
    }

    #[test]
    fn traditional_full_width_and_latin_names_fold_to_one_form() {
        assert_eq!(
            index_terms("晨光便利店")
                .iter()
                .find(|t| t.starts_with("n:")),
            index_terms("晨光便利店 ")
                .iter()
                .find(|t| t.starts_with("n:"))
        );
        let traditional = index_terms("陽光書店");
        assert!(
            traditional.contains(&"n:阳光书店".to_owned()),
            "{traditional:?}"
        );
        let latin = index_terms("ＡＢＣ超市");
        assert!(latin.iter().any(|t| t == "i:abccs"), "{latin:?}");
    }

    #[test]
    fn odd_and_huge_names_give_bounded_ascii_pinyin_terms() {
        for name in ["", " ", "🙂🙂", "\u{0}", "店", &"超".repeat(10_000), "ǹg店"] {
            let terms = index_terms(name);
            for term in terms
                .iter()
                .filter(|t| t.starts_with("i:") || t.starts_with("p:") || t.starts_with("y:"))
            {
                assert!(term.is_ascii(), "{term}");
            }
            assert!(
                terms.iter().filter(|t| t.starts_with("p:")).count() < MAX_INITIALS_PREFIX,
                "{name}"
            );
        }
        assert!(pinyin_query_terms("x").is_empty());
        assert!(pinyin_query_terms("张三").is_empty());
    }
}
