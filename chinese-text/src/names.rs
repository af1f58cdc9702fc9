//! How a Chinese personal name is found by what a grid worker types: the characters, the
//! full pinyin (`zhangsan`), syllables, initials (`zs`), pinyin prefixes (`zhangs`), and a
//! fuzzy pinyin form for the usual regional confusions (zh/z, n/l, an/ang …).
//!
//! Guarantees:
//! - Every reading of a polyphonic character is indexed (up to [`MAX_READING_COMBINATIONS`]
//!   combinations per name), and a surname's own reading (单 shan, 曾 zeng, 解 xie, 仇 qiu,
//!   区 ou, 朴 piao, 查 zha …, from [`crate::surnames`]) is always among them, first.
//! - A name splits into surname and given name exactly as linkage and masking split it.
//! - Fuzzy matching exists only for pinyin: no fuzzy term is ever derived from Chinese
//!   characters typed as such, so a 2–3 character name never matches a different name.
//! - The same functions produce index terms and query terms, so what is indexed is exactly
//!   what a query can reach.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use crate::fold::{fold_name, is_cjk};
pub use crate::reading::readings;
use crate::reading::surname_readings;
use crate::surnames;

/// At most this many reading combinations of one name are indexed.
pub const MAX_READING_COMBINATIONS: usize = 16;
/// Pinyin prefixes are indexed from this many letters …
pub const MIN_PREFIX: usize = 2;
/// … up to this many.
pub const MAX_PREFIX: usize = 14;

/// A name split into surname and given name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitName {
    pub surname: String,
    pub given: String,
}

/// Normalises a name: folded, without spaces or the separators of transliterated names
/// ([`fold_name`]).
pub fn normalise_name(name: &str) -> String {
    fold_name(name)
}

/// Splits a normalised all-CJK name the way linkage and masking do
/// ([`surnames::split_name`]).
pub fn split_name(name: &str) -> Option<SplitName> {
    if name.is_empty() || !name.chars().all(is_cjk) {
        return None;
    }
    let (surname, given) = surnames::split_name(name);
    Some(SplitName {
        surname: surname.to_owned(),
        given: given.to_owned(),
    })
}

/// Syllable sequences of a whole name, at most [`MAX_READING_COMBINATIONS`] of them.
pub fn name_readings(split: &SplitName) -> Vec<Vec<String>> {
    let mut per_char = surname_readings(&split.surname);
    per_char.extend(split.given.chars().map(readings));
    if per_char.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for options in &per_char {
        let mut next = Vec::new();
        for combo in &combos {
            for option in options {
                if next.len() >= MAX_READING_COMBINATIONS {
                    break;
                }
                let mut extended = combo.clone();
                extended.push(option.clone());
                next.push(extended);
            }
        }
        combos = next;
    }
    combos
}

/// Index terms of one name, as (family, term) pairs; see [`NameFamily`].
pub fn name_terms(raw: &str) -> Vec<(NameFamily, String)> {
    let name = normalise_name(raw);
    let mut out: BTreeSet<(NameFamily, String)> = BTreeSet::new();
    let Some(split) = split_name(&name) else {
        // Not a Chinese name (e.g. a transliterated foreign name): its letters as pinyin.
        let letters: String = name.chars().filter(char::is_ascii_alphabetic).collect();
        if !letters.is_empty() {
            out.insert((NameFamily::Pinyin, format!("f:{letters}")));
            for p in prefixes(&letters) {
                out.insert((NameFamily::Short, format!("p:{p}")));
            }
        }
        return out.into_iter().collect();
    };
    let chars: Vec<char> = name.chars().collect();
    out.insert((NameFamily::Chars, format!("w:{name}")));
    out.insert((NameFamily::Chars, format!("s:{}", split.surname)));
    if !split.given.is_empty() {
        out.insert((NameFamily::Chars, format!("g:{}", split.given)));
    }
    for pair in chars.windows(2) {
        out.insert((NameFamily::Chars, format!("b:{}{}", pair[0], pair[1])));
    }
    let surname_len = split.surname.chars().count();
    for syllables in name_readings(&split) {
        let joined: String = syllables.concat();
        let initials: String = syllables.iter().filter_map(|s| s.chars().next()).collect();
        let given: String = syllables[surname_len..].concat();
        out.insert((NameFamily::Pinyin, format!("f:{joined}")));
        if !given.is_empty() {
            out.insert((NameFamily::Pinyin, format!("gf:{given}")));
        }
        for s in &syllables {
            out.insert((NameFamily::Pinyin, format!("y:{s}")));
        }
        out.insert((NameFamily::Short, format!("i:{initials}")));
        for p in prefixes(&joined) {
            out.insert((NameFamily::Short, format!("p:{p}")));
        }
        // Surname in full, given name by initials: `zhangs` is a prefix, `zhangsf` is this.
        let mixed = format!(
            "{}{}",
            syllables[..surname_len].concat(),
            &initials[surname_len..]
        );
        out.insert((NameFamily::Short, format!("m:{mixed}")));
        out.insert((
            NameFamily::Fuzzy,
            format!("z:{}", fuzzy_syllables(&syllables)),
        ));
    }
    out.into_iter().collect()
}

/// Which family a name term belongs to; each family is its own index field and boost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NameFamily {
    /// Characters: whole name `w:`, surname `s:`, given name `g:`, bigrams `b:`.
    Chars,
    /// Full pinyin `f:`, given-name pinyin `gf:`, syllables `y:`.
    Pinyin,
    /// Initials `i:`, prefixes `p:`, surname + given initials `m:`.
    Short,
    /// Fuzzy-normalised full pinyin `z:`.
    Fuzzy,
}

fn prefixes(joined: &str) -> impl Iterator<Item = &str> {
    let len = joined.len();
    (MIN_PREFIX..len.min(MAX_PREFIX + 1)).filter_map(move |n| joined.get(..n))
}

/// One syllable in fuzzy form: zh/ch/sh -> z/c/s, n -> l, f -> h, r -> l; -ang/-eng/-ing
/// (and -iang/-uang) -> -an/-en/-in.
pub fn fuzzy_syllable(s: &str) -> String {
    let (initial, rest) = if let Some(rest) = s.strip_prefix("zh") {
        ("z", rest)
    } else if let Some(rest) = s.strip_prefix("ch") {
        ("c", rest)
    } else if let Some(rest) = s.strip_prefix("sh") {
        ("s", rest)
    } else if let Some(rest) = s.strip_prefix('n') {
        ("l", rest)
    } else if let Some(rest) = s.strip_prefix('f') {
        ("h", rest)
    } else if let Some(rest) = s.strip_prefix('r') {
        ("l", rest)
    } else {
        ("", s)
    };
    let rest = if rest.is_empty() && initial == "l" && s == "n" {
        // A lone `n` (嗯) is not an initial.
        "n"
    } else {
        rest
    };
    let final_ = if rest.ends_with("ang") || rest.ends_with("eng") || rest.ends_with("ing") {
        &rest[..rest.len() - 1]
    } else {
        rest
    };
    format!("{initial}{final_}")
}

fn fuzzy_syllables(syllables: &[String]) -> String {
    syllables.iter().map(|s| fuzzy_syllable(s)).collect()
}

/// Every plain pinyin syllable of the dictionary.
fn syllable_set() -> &'static BTreeSet<String> {
    static SET: OnceLock<BTreeSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set = BTreeSet::new();
        for code in 0x4E00u32..=0x9FA5 {
            if let Some(c) = char::from_u32(code) {
                set.extend(readings(c));
            }
        }
        set
    })
}

/// Splits a string of letters into pinyin syllables (longest match first, with
/// backtracking, no vowel-initial syllable after the first); `None` if it is not a sequence
/// of syllables.
pub fn segment_pinyin(letters: &str) -> Option<Vec<String>> {
    fn go(rest: &str, set: &BTreeSet<String>, out: &mut Vec<String>) -> bool {
        if rest.is_empty() {
            return true;
        }
        for len in (1..=rest.len().min(6)).rev() {
            let Some(head) = rest.get(..len) else {
                continue;
            };
            // As in written pinyin, a syllable starting with a, o or e inside a word needs an
            // apostrophe: without one, `nana` is na-na, not nan-a.
            let vowel_start = head.starts_with(['a', 'o', 'e']);
            if set.contains(head) && (!vowel_start || out.is_empty()) {
                out.push(head.to_owned());
                if go(&rest[len..], set, out) {
                    return true;
                }
                out.pop();
            }
        }
        false
    }
    if letters.is_empty() || letters.len() > 40 || !letters.bytes().all(|b| b.is_ascii_lowercase())
    {
        return None;
    }
    let mut out = Vec::new();
    go(letters, syllable_set(), &mut out).then_some(out)
}

/// Whether `letters` is one pinyin syllable.
pub fn is_syllable(letters: &str) -> bool {
    syllable_set().contains(letters)
}

/// The fuzzy term of a typed pinyin string, if it reads as two or more syllables.
pub fn fuzzy_query_term(letters: &str) -> Option<String> {
    let syllables = segment_pinyin(letters)?;
    (syllables.len() >= 2).then(|| format!("z:{}", fuzzy_syllables(&syllables)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(terms: &[(NameFamily, String)], family: NameFamily, term: &str) -> bool {
        terms.iter().any(|(f, t)| *f == family && t == term)
    }

    #[test]
    fn a_name_is_reachable_every_way_a_worker_types_it() {
        let terms = name_terms("张三");
        assert!(has(&terms, NameFamily::Chars, "w:张三"));
        assert!(has(&terms, NameFamily::Chars, "s:张"));
        assert!(has(&terms, NameFamily::Pinyin, "f:zhangsan"));
        assert!(has(&terms, NameFamily::Pinyin, "y:san"));
        assert!(has(&terms, NameFamily::Short, "i:zs"));
        assert!(has(&terms, NameFamily::Short, "p:zhangs"));
        assert!(has(&terms, NameFamily::Short, "p:zh"));
        assert!(
            !has(&terms, NameFamily::Short, "p:zhangsan"),
            "the full form is not a prefix"
        );
        assert_eq!(fuzzy_query_term("zangsan"), Some("z:zansan".to_owned()));
        assert!(has(&terms, NameFamily::Fuzzy, "z:zansan"));
    }

    #[test]
    fn every_reading_of_every_unified_ideograph_is_ascii_and_every_name_indexes() {
        // The characters whose plain readings are not ASCII (欸 ê, 呣 ḿ, 嗯 ń ň ǹ …) once
        // stopped the search follower; every character now yields typable readings only.
        for code in (0x3400u32..=0x4DBF)
            .chain(0x4E00..=0x9FFF)
            .chain(0x20000..=0x2A6DF)
        {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            for reading in readings(c) {
                assert!(
                    reading.bytes().all(|b| b.is_ascii_lowercase()),
                    "{c}: {reading}"
                );
            }
        }
        for name in [
            "欸欸",
            "李呣",
            "嗯嗯嗯",
            "欧阳嗯",
            "ḿ",
            "王\u{0301}",
            "𠀀𠀁",
        ] {
            let terms = name_terms(name);
            for (_, term) in &terms {
                assert!(!term.is_empty(), "{name}");
            }
        }
        assert!(name_terms("李嗯")
            .iter()
            .any(|(f, t)| *f == NameFamily::Pinyin && t == "f:lin"));
    }

    #[test]
    fn surname_readings_override_the_dictionary() {
        for (name, full) in [
            ("单田芳", "f:shantianfang"),
            ("曾志伟", "f:zengzhiwei"),
            ("解晓东", "f:xiexiaodong"),
            ("仇英", "f:qiuying"),
            ("区志强", "f:ouzhiqiang"),
            ("朴树", "f:piaoshu"),
            ("查良镛", "f:zhaliangyong"),
        ] {
            let terms = name_terms(name);
            assert!(has(&terms, NameFamily::Pinyin, full), "{name}: {terms:?}");
        }
        // The common reading stays findable too.
        assert!(has(
            &name_terms("单田芳"),
            NameFamily::Pinyin,
            "f:dantianfang"
        ));
    }

    #[test]
    fn compound_surnames_and_traditional_names() {
        let terms = name_terms("歐陽娜娜");
        assert!(has(&terms, NameFamily::Chars, "w:欧阳娜娜"));
        assert!(has(&terms, NameFamily::Chars, "s:欧阳"));
        assert!(has(&terms, NameFamily::Short, "i:oynn"));
        assert!(has(&terms, NameFamily::Short, "m:ouyangnn"));
    }

    #[test]
    fn traditional_and_simplified_writings_index_alike() {
        let traditional = name_terms("王強");
        assert_eq!(traditional, name_terms("王强"));
        assert!(has(&traditional, NameFamily::Pinyin, "f:wangqiang"));
        assert!(has(&traditional, NameFamily::Short, "i:wq"));
        assert_eq!(name_terms("ＷＡＮＧ"), name_terms("wang"));
        let split = split_name(&normalise_name("歐陽娜娜")).expect("a Chinese name");
        assert_eq!(
            (split.surname.as_str(), split.given.as_str()),
            ("欧阳", "娜娜")
        );
    }

    #[test]
    fn polyphonic_given_names_index_every_reading() {
        // 乐 reads le and yue.
        let terms = name_terms("王乐");
        assert!(has(&terms, NameFamily::Pinyin, "f:wangle"));
        assert!(has(&terms, NameFamily::Pinyin, "f:wangyue"));
    }

    #[test]
    fn fuzzy_is_for_pinyin_only() {
        assert!(name_terms("张三")
            .iter()
            .filter(|(f, _)| *f == NameFamily::Fuzzy)
            .all(|(_, t)| t.is_ascii()));
        assert_eq!(fuzzy_syllable("zhang"), "zan");
        assert_eq!(fuzzy_syllable("liu"), "liu");
        assert_eq!(fuzzy_syllable("niu"), "liu");
        assert_eq!(fuzzy_syllable("ming"), "min");
        assert_eq!(fuzzy_syllable("fei"), "hei");
        assert_eq!(segment_pinyin("xian").map(|s| s.len()), Some(1));
        assert_eq!(
            segment_pinyin("ouyangnana"),
            Some(vec!["ou".into(), "yang".into(), "na".into(), "na".into()])
        );
        assert_eq!(segment_pinyin("qzxv"), None);
    }
}
