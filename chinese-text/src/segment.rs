//! Free Chinese text (event titles and descriptions) cut into words with jieba in search
//! mode, plus character bigrams so that names and words jieba does not know are found.
//!
//! Guarantees: the segmenter is one process-wide instance with the same user dictionary at
//! index and query time, so a word indexed from a document is the word a query produces.

use std::sync::OnceLock;

use jieba_rs::Jieba;

use crate::fold::{fold, is_cjk};

/// Words of this street's grid work that the default dictionary cuts badly.
#[rustfmt::skip]
const USER_WORDS: &[&str] = &[
    "电动自行车", "电动车", "飞线充电", "充电桩", "群租房", "群租", "高空抛物", "消防通道", "违法建设",
    "私搭乱建", "楼道堆物", "垃圾桶", "独居老人", "空巢老人", "网格员", "居委会", "调解室", "物业",
    "噪音扰民", "漏水", "宠物扰民", "文明养犬", "彩钢板房", "城管执法队", "派出所", "环卫所", "社区矫正",
    "望京街道", "幸福里", "花家地北里", "南湖东园", "望花路东里", "宝星园", "利泽西园", "方舟苑", "季景",
    "大西洋新城", "夏都家园", "南湖西里",
];

fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(|| {
        let mut jieba = Jieba::new();
        for word in USER_WORDS {
            jieba.add_word(word, Some(20_000), None);
        }
        jieba
    })
}

/// Loads the dictionary now rather than on the first request.
pub fn warm_up() {
    let _ = jieba();
}

fn is_word(word: &str) -> bool {
    word.chars().any(|c| is_cjk(c) || c.is_alphanumeric())
}

/// Search-mode words of `text` (folded), punctuation dropped.
pub fn search_words(text: &str) -> Vec<String> {
    let folded = fold(text);
    jieba()
        .cut_for_search(&folded, true)
        .into_iter()
        .map(|t| t.word.trim().to_owned())
        .filter(|w| is_word(w))
        .collect()
}

/// Index terms of a text: search-mode words `w:` and CJK bigrams `g:`.
pub fn index_terms(text: &str) -> Vec<String> {
    let mut out: Vec<String> = search_words(text)
        .into_iter()
        .map(|w| format!("w:{w}"))
        .collect();
    out.extend(bigrams(&fold(text)).into_iter().map(|b| format!("g:{b}")));
    out
}

/// Index terms of a text a caller sees only masked: search-mode words of the redacted
/// text, without words jieba tags as person names and without digits, and no bigrams (which
/// would make any name findable).
pub fn masked_terms(redacted: &str) -> Vec<String> {
    let folded = fold(redacted);
    let jieba = jieba();
    let names: std::collections::HashSet<&str> = jieba
        .tag(&folded, true)
        .into_iter()
        .filter(|t| t.tag.starts_with("nr"))
        .map(|t| t.word)
        .collect();
    jieba
        .cut_for_search(&folded, true)
        .into_iter()
        .map(|t| t.word.trim())
        .filter(|w| {
            is_word(w)
                && !w.chars().any(|c| c.is_ascii_digit())
                && !names.iter().any(|n| n.contains(*w) || w.contains(*n))
        })
        .map(|w| format!("w:{w}"))
        .collect()
}

/// Byte ranges of the words jieba tags as person names (`nr…`) in `text`, for redaction.
pub fn person_name_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut offset = 0;
    for tag in jieba().tag(text, true) {
        let start = offset;
        offset += tag.word.len();
        if tag.tag.starts_with("nr") && tag.word.chars().count() >= 2 {
            spans.push(start..offset);
        }
    }
    spans
}

fn bigrams(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .windows(2)
        .filter(|w| is_cjk(w[0]) && is_cjk(w[1]))
        .map(|w| w.iter().collect())
        .collect()
}

/// One word of a text query: it matches if any of `alternatives` is indexed, or if every
/// bigram of the word is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordQuery {
    pub alternatives: Vec<String>,
    pub bigrams: Vec<String>,
}

/// The words of a text query (precise mode), each with its search-mode sub-words.
pub fn query_words(text: &str) -> Vec<WordQuery> {
    let folded = fold(text);
    let jieba = jieba();
    jieba
        .cut(&folded, true)
        .into_iter()
        .map(|t| t.word.trim())
        .filter(|w| is_word(w))
        .map(|word| {
            let mut alternatives: Vec<String> = jieba
                .cut_for_search(word, true)
                .into_iter()
                .map(|t| t.word.trim())
                .filter(|w| w.chars().count() >= 2 && is_word(w))
                .map(|w| format!("w:{w}"))
                .collect();
            let whole = format!("w:{word}");
            if !alternatives.contains(&whole) {
                alternatives.push(whole);
            }
            alternatives.sort();
            alternatives.dedup();
            let bigrams = bigrams(word)
                .into_iter()
                .map(|b| format!("g:{b}"))
                .collect();
            WordQuery {
                alternatives,
                bigrams,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_name_spans_are_byte_ranges_of_tagged_names() {
        let text = "居民王小明反映楼上漏水";
        for span in person_name_spans(text) {
            let word = &text[span];
            assert!(word.chars().count() >= 2, "{word}");
        }
        assert!(person_name_spans("").is_empty());
    }

    #[test]
    fn a_query_word_reaches_the_indexed_text() {
        let indexed =
            index_terms("网格员巡查发现3号楼2单元楼道内有电动自行车飞线充电，车主为张三。");
        for query in ["电动车 充电", "飞线充电", "张三", "楼道"] {
            for part in query.split_whitespace() {
                for word in query_words(part) {
                    let hit = word.alternatives.iter().any(|a| indexed.contains(a))
                        || (!word.bigrams.is_empty()
                            && word.bigrams.iter().all(|b| indexed.contains(b)));
                    assert!(hit, "{query}: {word:?}");
                }
            }
        }
    }
}
