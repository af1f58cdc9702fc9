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

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::mask::{mask_id_number, mask_name, mask_phone};

/// Provincial abbreviations that start a licence plate.
const PLATE_PROVINCES: &str = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";

/// Names the broker knows (for example every resident of a jurisdiction), searched all at once.
#[derive(Debug, Clone)]
pub struct NameDirectory {
    automaton: Option<AhoCorasick>,
    len: usize,
}

impl NameDirectory {
    /// Builds the directory; names shorter than two characters are ignored.
    pub fn new<I, S>(names: I) -> NameDirectory
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns: Vec<String> = names
            .into_iter()
            .map(|n| n.as_ref().trim().to_owned())
            .filter(|n| n.chars().count() >= 2)
            .collect();
        patterns.sort();
        patterns.dedup();
        let len = patterns.len();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::NoncontiguousNFA))
            .build(&patterns)
            .ok()
            .filter(|_| len > 0);
        NameDirectory { automaton, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn spans(&self, text: &str) -> Vec<Range<usize>> {
        match &self.automaton {
            Some(ac) => ac.find_iter(text).map(|m| m.range()).collect(),
            None => Vec::new(),
        }
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

    proptest! {
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
