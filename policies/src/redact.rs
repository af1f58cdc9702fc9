//! Redaction of personal data inside free text (event titles and descriptions, notes).
//!
//! Guarantees: in the returned text
//! - every run of 7 or more digits (ASCII or full-width, allowing single spaces or hyphens
//!   between digit groups, and a trailing `X` for ID numbers) is replaced: an ID number by its
//!   mask (`110105********002X`), a mobile by `138****5678`, a landline keeping its area code,
//!   anything else (bank cards, legacy IDs, account numbers) by a bracketed label;
//! - every licence plate (`京A12345`, `粤B D12345`) is replaced by `[车牌]`;
//! - every known name (the names passed in, the [`NameDirectory`], and the spans a name tagger
//!   reports) is masked as `张*`.
//!
//! Digit runs are found by scanning characters, not by a regex word boundary: Rust's Unicode
//! `\b` does not fire between a Chinese character and a digit (`身份证号110101…`).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::RwLock;

use crate::mask::{mask_id_number, mask_name, mask_phone};

/// Provincial abbreviations that start a licence plate.
const PLATE_PROVINCES: &str = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";

/// Longest name, in characters, the directory keeps: a longer "name" is not a person's name
/// (the longest transliterated names are about 20 characters) and would only make every
/// scan try one more length.
pub const MAX_NAME_CHARS: usize = 64;

/// Names the broker knows (for example every resident of a jurisdiction), found in a text
/// leftmost-longest, as a single automaton over all of them would.
///
/// Guarantees: names are added in place ([`Self::insert`]) and a scan sees each name either
/// entirely or not at all; the directory holds each name once (about 50 bytes per name, and
/// nothing is rebuilt as names are added, so memory grows with the names and never doubles);
/// a scan costs one lookup per character of the text whose first two characters start some
/// name, plus one per distinct name length there.
#[derive(Default)]
pub struct NameDirectory {
    names: RwLock<Names>,
}

#[derive(Default)]
struct Names {
    set: HashSet<Box<str>>,
    /// The first two characters of every name: most positions of a text are rejected here.
    starts: HashSet<(char, char)>,
    /// How many names there are of each length in characters (index = length).
    lengths: Vec<usize>,
}

impl std::fmt::Debug for NameDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameDirectory")
            .field("len", &self.len())
            .finish()
    }
}

impl NameDirectory {
    /// The directory of `names`; names shorter than two characters or longer than
    /// [`MAX_NAME_CHARS`] are ignored, as are surrounding spaces.
    pub fn new<I, S>(names: I) -> NameDirectory
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let directory = NameDirectory::default();
        directory.extend(names);
        directory
    }

    /// Adds `name` (trimmed; see [`Self::new`] for what is ignored). Returns whether it was new.
    pub fn insert(&self, name: &str) -> bool {
        self.extend([name]) == 1
    }

    /// Adds `names` under one write lock; returns how many were new.
    pub fn extend<I, S>(&self, names: I) -> usize
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut guard = match self.names.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut added = 0;
        for name in names {
            let name = name.as_ref().trim();
            let mut chars = name.chars();
            let (Some(first), Some(second)) = (chars.next(), chars.next()) else {
                continue;
            };
            let count = 2 + chars.count();
            if count > MAX_NAME_CHARS || guard.set.contains(name) {
                continue;
            }
            guard.set.insert(name.into());
            guard.starts.insert((first, second));
            if guard.lengths.len() <= count {
                guard.lengths.resize(count + 1, 0);
            }
            guard.lengths[count] += 1;
            added += 1;
        }
        added
    }

    pub fn len(&self) -> usize {
        match self.names.read() {
            Ok(guard) => guard.set.len(),
            Err(poisoned) => poisoned.into_inner().set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The byte ranges of the names in `text`: scanning from the left, at each position the
    /// longest name that starts there; matches do not overlap.
    pub fn spans(&self, text: &str) -> Vec<Range<usize>> {
        let guard = match self.names.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let names = &*guard;
        if names.set.is_empty() {
            return Vec::new();
        }
        // Byte offset of every character, and the end of the text.
        let offsets: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()))
            .collect();
        let chars: Vec<char> = text.chars().collect();
        let mut spans = Vec::new();
        let mut at = 0;
        while at + 1 < chars.len() {
            if !names.starts.contains(&(chars[at], chars[at + 1])) {
                at += 1;
                continue;
            }
            let longest = (chars.len() - at).min(names.lengths.len().saturating_sub(1));
            let found = (2..=longest).rev().find(|&count| {
                names.lengths[count] > 0
                    && names.set.contains(&text[offsets[at]..offsets[at + count]])
            });
            match found {
                Some(count) => {
                    spans.push(offsets[at]..offsets[at + count]);
                    at += count;
                }
                None => at += 1,
            }
        }
        spans
    }
}

/// A function that reports the byte ranges of person names in a text (e.g. a segmenter's
/// `nr` tags).
pub type NameTagger<'a> = &'a dyn Fn(&str) -> Vec<Range<usize>>;

/// Redacts `text`; see the module docs for what is replaced.
pub fn redact(
    text: &str,
    names: &[&str],
    directory: Option<&NameDirectory>,
    tagger: Option<NameTagger<'_>>,
) -> String {
    let mut spans: Vec<(Range<usize>, String)> = Vec::new();
    for (range, replacement) in number_spans(text) {
        spans.push((range, replacement));
    }
    for range in plate_spans(text) {
        spans.push((range, "[车牌]".to_owned()));
    }
    let mut name_ranges: Vec<Range<usize>> = Vec::new();
    for name in names
        .iter()
        .map(|n| n.trim())
        .filter(|n| n.chars().count() >= 2)
    {
        name_ranges.extend(text.match_indices(name).map(|(i, m)| i..i + m.len()));
    }
    if let Some(directory) = directory {
        name_ranges.extend(directory.spans(text));
    }
    if let Some(tagger) = tagger {
        name_ranges.extend(
            tagger(text)
                .into_iter()
                .filter(|r| r.start < r.end && text.get(r.clone()).is_some()),
        );
    }
    for range in name_ranges {
        if let Some(name) = text.get(range.clone()) {
            spans.push((range, mask_name(name)));
        }
    }
    apply_spans(text, spans)
}

/// Replaces non-overlapping spans; where spans overlap, the earliest-starting (then longest)
/// wins and the union of the overlap is replaced.
fn apply_spans(text: &str, mut spans: Vec<(Range<usize>, String)>) -> String {
    spans.sort_by(|a, b| a.0.start.cmp(&b.0.start).then(b.0.end.cmp(&a.0.end)));
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for (range, replacement) in spans {
        if range.start < cursor {
            // Overlaps the previous replacement: extend it to cover this span too.
            cursor = cursor.max(range.end);
            continue;
        }
        if let Some(before) = text.get(cursor..range.start) {
            out.push_str(before);
        }
        out.push_str(&replacement);
        cursor = range.end;
    }
    if let Some(rest) = text.get(cursor..) {
        out.push_str(rest);
    }
    out
}

fn ascii_digit(c: char) -> Option<char> {
    match c {
        '0'..='9' => Some(c),
        '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32),
        _ => None,
    }
}

/// Runs of digits (with single separators between groups) and what replaces them.
fn number_spans(text: &str) -> Vec<(Range<usize>, String)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if ascii_digit(chars[i].1).is_none() {
            i += 1;
            continue;
        }
        let start = chars[i].0;
        let mut digits = String::new();
        let mut separators = Vec::new();
        let mut j = i;
        while j < chars.len() {
            if let Some(d) = ascii_digit(chars[j].1) {
                digits.push(d);
                j += 1;
            } else if matches!(chars[j].1, ' ' | '-' | '－')
                && j + 1 < chars.len()
                && ascii_digit(chars[j + 1].1).is_some()
            {
                separators.push(digits.len());
                j += 1;
            } else {
                break;
            }
        }
        let mut end = chars.get(j).map(|(b, _)| *b).unwrap_or(text.len());
        let mut id_tail = false;
        if digits.len() == 17 {
            if let Some((b, c)) = chars.get(j) {
                if matches!(c, 'X' | 'x' | 'Ｘ' | 'ｘ') {
                    id_tail = true;
                    end = b + c.len_utf8();
                    j += 1;
                }
            }
        }
        let total = digits.len() + usize::from(id_tail);
        if total >= 7 {
            let replacement = if total == 18 {
                let mut id = digits.clone();
                if id_tail {
                    id.push('X');
                }
                mask_id_number(&id)
            } else if digits.len() == 11
                && digits.starts_with('1')
                && separators.iter().all(|s| [3, 7].contains(s))
            {
                mask_phone(&digits)
            } else if digits.starts_with('0')
                && separators.len() == 1
                && (3..=4).contains(&separators[0])
            {
                let (area, local) = digits.split_at(separators[0]);
                mask_phone(&format!("{area}-{local}"))
            } else if digits.len() == 15 {
                "[证件号]".to_owned()
            } else if (16..=19).contains(&digits.len()) {
                "[银行卡号]".to_owned()
            } else {
                "[号码]".to_owned()
            };
            spans.push((start..end, replacement));
        }
        i = j.max(i + 1);
    }
    spans
}

/// Licence plates: a provincial abbreviation, a letter, then five or six letters/digits.
fn plate_spans(text: &str) -> Vec<Range<usize>> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut spans = Vec::new();
    for (i, (start, c)) in chars.iter().enumerate() {
        if !PLATE_PROVINCES.contains(*c) {
            continue;
        }
        let Some((_, letter)) = chars.get(i + 1) else {
            continue;
        };
        if !letter.is_ascii_uppercase() {
            continue;
        }
        let mut j = i + 2;
        // Allow one space or middle dot after the city letter.
        if chars
            .get(j)
            .is_some_and(|(_, c)| matches!(c, ' ' | '·' | '•'))
        {
            j += 1;
        }
        let body_start = j;
        while chars
            .get(j)
            .is_some_and(|(_, c)| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            j += 1;
        }
        let body = j - body_start;
        if (5..=6).contains(&body) {
            let end = chars.get(j).map(|(b, _)| *b).unwrap_or(text.len());
            spans.push(*start..end);
        }
    }
    spans
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identifiers_next_to_chinese_are_found() {
        let text = "居民身份证号11010519491231002X，电话13812345678，座机010-87654321，卡号6222020200112233445，房间501";
        let out = redact(text, &[], None, None);
        assert!(out.contains("110105********002X"), "{out}");
        assert!(!out.contains("11010519491231002X"));
        assert!(out.contains("138****5678"));
        assert!(!out.contains("13812345678"));
        assert!(out.contains("010-****4321"));
        assert!(out.contains("[银行卡号]"));
        assert!(out.contains("房间501"));
    }

    #[test]
    fn spaced_and_full_width_numbers_are_found() {
        let out = redact(
            "手机 138 1234 5678 或１３８１２３４５６７８",
            &[],
            None,
            None,
        );
        assert!(!out.contains("5678 或１"), "{out}");
        assert!(!out.contains("１３８１２３４５６７８"), "{out}");
    }

    #[test]
    fn plates_and_names() {
        let directory = NameDirectory::new(["欧阳娜娜", "李四"]);
        let out = redact(
            "张三与欧阳娜娜因车辆京A12345停放发生纠纷，李四到场",
            &["张三"],
            Some(&directory),
            None,
        );
        assert_eq!(out, "张*与欧阳**因车辆[车牌]停放发生纠纷，李*到场");
    }

    #[test]
    fn tagger_spans_are_masked() {
        let tagger = |text: &str| -> Vec<Range<usize>> {
            let name = "王小明";
            text.find(name)
                .map(|start| std::iter::once(start..start + name.len()).collect())
                .unwrap_or_default()
        };
        let out = redact("王小明反映噪音", &[], None, Some(&tagger));
        assert_eq!(out, "王**反映噪音");
    }

    /// What one automaton over every name finds (the directory's implementation before it
    /// was kept in place): the oracle the directory is checked against.
    fn automaton_spans(names: &[String], text: &str) -> Vec<Range<usize>> {
        let mut patterns: Vec<&str> = names
            .iter()
            .map(|n| n.trim())
            .filter(|n| (2..=MAX_NAME_CHARS).contains(&n.chars().count()))
            .collect();
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Vec::new();
        }
        let automaton = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&patterns)
            .unwrap();
        automaton.find_iter(text).map(|m| m.range()).collect()
    }

    #[test]
    fn the_longest_name_at_the_leftmost_position_wins() {
        let directory = NameDirectory::new(["王小", "王小明", "小明", "明亮", " 李四 ", "张", ""]);
        assert_eq!(directory.len(), 5);
        let text = "王小明亮和李四";
        let spans = directory.spans(text);
        let found: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(found, ["王小明", "李四"]);
        assert!(directory.spans("张三").is_empty());
    }

    #[test]
    fn a_name_added_later_is_found_at_once_and_counted_once() {
        let directory = NameDirectory::default();
        assert!(directory.spans("赵六到场").is_empty());
        assert!(directory.insert("赵六"));
        assert!(!directory.insert(" 赵六"));
        assert_eq!(directory.extend(["赵六", "钱七", "x"]), 1);
        assert_eq!(directory.len(), 2);
        assert_eq!(
            directory.spans("赵六到场"),
            vec![Range { start: 0, end: 6 }]
        );
        let long = "长".repeat(MAX_NAME_CHARS + 1);
        assert!(!directory.insert(&long));
    }

    #[test]
    fn readers_see_whole_names_while_names_are_added() {
        let directory = std::sync::Arc::new(NameDirectory::default());
        let writer = {
            let directory = directory.clone();
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    directory.insert(&format!("名{i:04}"));
                }
            })
        };
        let text = "名1999与名0007";
        while !writer.is_finished() {
            for span in directory.spans(text) {
                assert!(span == (0..7) || span == (10..17), "{span:?}");
            }
        }
        writer.join().unwrap();
        assert_eq!(directory.spans(text), [0..7, 10..17]);
    }

    proptest! {
        /// Names and texts over a small alphabet, so that names overlap, nest and repeat.
        #[test]
        fn finds_what_one_automaton_over_every_name_finds(
            names in proptest::collection::vec("[王小明 ]{0,4}", 0..16),
            text in "[王小明李 ]{0,40}",
        ) {
            let directory = NameDirectory::new(&names);
            prop_assert_eq!(directory.spans(&text), automaton_spans(&names, &text));
        }

        #[test]
        fn never_panics_and_never_leaks_an_embedded_id(prefix in "\\PC{0,20}", suffix in "\\PC{0,20}", n in 0u64..99_999_999_999_999_999) {
            let first17 = format!("{:017}", n % 100_000_000_000_000_000);
            let id = format!("{first17}X");
            let text = format!("{prefix}{id}{suffix}");
            let out = redact(&text, &[], None, None);
            prop_assert!(!out.contains(&id));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = redact(&text, &["张三"], Some(&NameDirectory::new(["李四"])), None);
        }
    }
}
