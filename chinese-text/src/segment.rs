//! Free Chinese text (event titles and descriptions) cut into words with jieba in search
//! mode, plus character bigrams so that names and words jieba does not know are found.
//!
//! Guarantees:
//! - The functions of this module use one process-wide [`Segmenter`], built at the first
//!   segmentation (or [`warm_up`]) from jieba's dictionary, the generic grid-work vocabulary
//!   and the user dictionary installed before it ([`install_user_words`]). It never changes
//!   afterwards, so a word indexed from a document is the word a query produces.
//! - A word of the vocabulary or of the user dictionary is never cut apart in precise mode.
//! - Product code holds no place names: a deployment's streets and compounds come from its
//!   configured user dictionary ([`parse_user_dictionary`]).
//! - Text is folded ([`crate::fold::fold`]) before it is cut, and so are user words.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::OnceLock;

use jieba_rs::Jieba;

use crate::fold::{fold, is_cjk};

/// Words of grid work that jieba's dictionary cuts badly. Generic vocabulary only: place
/// names belong in a deployment's user dictionary.
#[rustfmt::skip]
const GRID_WORDS: &[&str] = &[
    "电动自行车", "电动车", "飞线充电", "充电桩", "群租房", "群租", "高空抛物", "消防通道", "违法建设",
    "私搭乱建", "楼道堆物", "垃圾桶", "独居老人", "空巢老人", "网格员", "居委会", "调解室", "物业",
    "噪音扰民", "漏水", "宠物扰民", "文明养犬", "彩钢板房", "城管执法队", "派出所", "环卫所", "社区矫正",
];

/// The jieba frequency of a word added without one: high enough that jieba keeps it whole.
pub const DEFAULT_FREQUENCY: usize = 20_000;

/// One word of a user dictionary, folded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserWord {
    pub word: String,
    /// jieba's word frequency; [`DEFAULT_FREQUENCY`] when absent.
    pub frequency: Option<usize>,
}

/// A line of a user dictionary that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user dictionary line {line}: {message}")]
pub struct DictionaryError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The process-wide segmenter is already in use with a different user dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the segmenter is already in use with a different user dictionary: install the user \
     dictionary once, before the first segmentation"
)]
pub struct AlreadyInitialised;

/// Reads a user dictionary: one word per line, optionally followed by whitespace and a
/// positive frequency; `#` starts a comment; blank lines are ignored. Words are folded.
pub fn parse_user_dictionary(text: &str) -> Result<Vec<UserWord>, DictionaryError> {
    let mut words = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let error = |message: String| DictionaryError {
            line: line_no,
            message,
        };
        let line = line.trim_start_matches('\u{FEFF}');
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let (word, frequency) = match fields.as_slice() {
            [word] => (*word, None),
            [word, frequency] => match frequency.parse::<usize>() {
                Ok(n) if n > 0 => (*word, Some(n)),
                _ => {
                    return Err(error(format!(
                        "`{frequency}` is not a frequency: write a positive whole number \
                         after the word, or only the word"
                    )))
                }
            },
            _ => {
                return Err(error(format!(
                    "expected `word` or `word frequency`, found {} fields: a word may not \
                     contain spaces",
                    fields.len()
                )))
            }
        };
        if !word.chars().any(|c| is_cjk(c) || c.is_alphanumeric()) {
            return Err(error(format!(
                "`{word}` has no letter, digit or Chinese character: remove the line"
            )));
        }
        words.push(UserWord {
            word: fold(word),
            frequency,
        });
    }
    Ok(words)
}

/// Sets the user dictionary of the process-wide segmenter. Must be called before the first
/// segmentation; calling it again with the same words (in any order) is accepted.
pub fn install_user_words(words: Vec<UserWord>) -> Result<(), AlreadyInitialised> {
    let words = normalise(words);
    let shared = SHARED.get_or_init(|| Segmenter::build(words.clone()));
    if shared.user_words == words {
        Ok(())
    } else {
        Err(AlreadyInitialised)
    }
}

static SHARED: OnceLock<Segmenter> = OnceLock::new();

/// The process-wide segmenter (without user words if none were installed before).
pub fn shared() -> &'static Segmenter {
    SHARED.get_or_init(|| Segmenter::build(Vec::new()))
}

/// Builds the process-wide segmenter now rather than on the first request. Call it after
/// [`install_user_words`]: from here on the user dictionary is fixed.
pub fn warm_up() {
    let _ = shared();
}

/// Search-mode words of `text` (folded), punctuation dropped.
pub fn search_words(text: &str) -> Vec<String> {
    shared().search_words(text)
}

/// Index terms of a text: search-mode words `w:` and CJK bigrams `g:`.
pub fn index_terms(text: &str) -> Vec<String> {
    shared().index_terms(text)
}

/// Index terms of a text a caller sees only masked (see [`Segmenter::masked_terms`]).
pub fn masked_terms(redacted: &str) -> Vec<String> {
    shared().masked_terms(redacted)
}

/// Byte ranges of the words jieba tags as person names (`nr…`) in `text`, for redaction.
pub fn person_name_spans(text: &str) -> Vec<Range<usize>> {
    shared().person_name_spans(text)
}

/// The words of a text query (see [`Segmenter::query_words`]).
pub fn query_words(text: &str) -> Vec<WordQuery> {
    shared().query_words(text)
}

/// One word of a text query: it matches if any of `alternatives` is indexed, or if every
/// bigram of the word is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordQuery {
    pub alternatives: Vec<String>,
    pub bigrams: Vec<String>,
}

/// jieba with the grid-work vocabulary and a user dictionary. The module's functions use the
/// process-wide one; build another only where a different dictionary is the point (tests).
#[derive(Debug)]
pub struct Segmenter {
    jieba: Jieba,
    user_words: Vec<UserWord>,
}

impl Segmenter {
    /// jieba's dictionary, the grid-work vocabulary and `user_words`.
    pub fn new(user_words: Vec<UserWord>) -> Segmenter {
        Segmenter::build(normalise(user_words))
    }

    fn build(user_words: Vec<UserWord>) -> Segmenter {
        let mut jieba = Jieba::new();
        for word in GRID_WORDS {
            jieba.add_word(word, Some(DEFAULT_FREQUENCY), None);
        }
        for word in &user_words {
            let frequency = word.frequency.unwrap_or(DEFAULT_FREQUENCY);
            jieba.add_word(&fold(&word.word), Some(frequency), None);
        }
        Segmenter { jieba, user_words }
    }

    /// Search-mode words of `text` (folded), punctuation dropped.
    pub fn search_words(&self, text: &str) -> Vec<String> {
        let folded = fold(text);
        self.jieba
            .cut_for_search(&folded, true)
            .into_iter()
            .map(|t| t.word.trim().to_owned())
            .filter(|w| is_word(w))
            .collect()
    }

    /// Precise-mode words of `text` (folded), punctuation dropped.
    pub fn words(&self, text: &str) -> Vec<String> {
        let folded = fold(text);
        self.jieba
            .cut(&folded, true)
            .into_iter()
            .map(|t| t.word.trim().to_owned())
            .filter(|w| is_word(w))
            .collect()
    }

    /// Index terms of a text: search-mode words `w:` and CJK bigrams `g:`.
    pub fn index_terms(&self, text: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .search_words(text)
            .into_iter()
            .map(|w| format!("w:{w}"))
            .collect();
        out.extend(bigrams(&fold(text)).into_iter().map(|b| format!("g:{b}")));
        out
    }

    /// Index terms of a text a caller sees only masked: search-mode words of the redacted
    /// text, without words jieba tags as person names and without digits, and no bigrams
    /// (which would make any name findable).
    pub fn masked_terms(&self, redacted: &str) -> Vec<String> {
        let folded = fold(redacted);
        let names: HashSet<&str> = self
            .jieba
            .tag(&folded, true)
            .into_iter()
            .filter(|t| t.tag.starts_with("nr"))
            .map(|t| t.word)
            .collect();
        self.jieba
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
    pub fn person_name_spans(&self, text: &str) -> Vec<Range<usize>> {
        let mut spans = Vec::new();
        let mut offset = 0;
        for tag in self.jieba.tag(text, true) {
            let start = offset;
            offset += tag.word.len();
            if tag.tag.starts_with("nr") && tag.word.chars().count() >= 2 {
                spans.push(start..offset);
            }
        }
        spans
    }

    /// The words of a text query (precise mode), each with its search-mode sub-words.
    pub fn query_words(&self, text: &str) -> Vec<WordQuery> {
        self.words(text)
            .into_iter()
            .map(|word| {
                let mut alternatives: Vec<String> = self
                    .jieba
                    .cut_for_search(&word, true)
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
                let bigrams = bigrams(&word)
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

    /// The user words this segmenter was built with, folded, sorted, one entry per word.
    pub fn user_words(&self) -> &[UserWord] {
        &self.user_words
    }
}

/// Folded, sorted, one entry per word (the first given wins), so that installing the same
/// dictionary twice compares equal.
fn normalise(words: Vec<UserWord>) -> Vec<UserWord> {
    let mut seen = HashSet::new();
    let mut out: Vec<UserWord> = words
        .into_iter()
        .map(|w| UserWord {
            word: fold(&w.word),
            frequency: w.frequency,
        })
        .filter(|w| seen.insert(w.word.clone()))
        .collect();
    out.sort();
    out
}

fn is_word(word: &str) -> bool {
    word.chars().any(|c| is_cjk(c) || c.is_alphanumeric())
}

fn bigrams(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .windows(2)
        .filter(|w| is_cjk(w[0]) && is_cjk(w[1]))
        .map(|w| w.iter().collect())
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
        for query in ["电动车 充电", "飞线充电", "张三", "楼道", "電動車"] {
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

    #[test]
    fn grid_words_stay_whole() {
        let segmenter = Segmenter::new(Vec::new());
        for word in GRID_WORDS {
            let text = format!("居民反映{word}问题");
            assert!(
                segmenter.words(&text).contains(&(*word).to_owned()),
                "{word}"
            );
        }
    }

    #[test]
    fn a_user_word_stays_whole_only_in_a_segmenter_that_has_it() {
        let dictionary = parse_user_dictionary("# compounds\n梧桐湾北坊 50000\n").expect("valid");
        let text = "梧桐湾北坊3号楼漏水";
        let without = Segmenter::new(Vec::new()).words(text);
        assert!(!without.contains(&"梧桐湾北坊".to_owned()), "{without:?}");
        let with = Segmenter::new(dictionary).words(text);
        assert!(with.contains(&"梧桐湾北坊".to_owned()), "{with:?}");
    }

    #[test]
    fn dictionary_errors_name_the_line_and_the_fix() {
        let words = parse_user_dictionary("\u{FEFF}飛線充電\n\n# comment\n群租房 300 # note\n")
            .expect("valid");
        assert_eq!(
            words,
            vec![
                UserWord {
                    word: "飞线充电".to_owned(),
                    frequency: None
                },
                UserWord {
                    word: "群租房".to_owned(),
                    frequency: Some(300)
                },
            ]
        );
        let error = parse_user_dictionary("幸福\n好 词 语\n").expect_err("three fields");
        assert_eq!(error.line, 2);
        assert!(
            error.to_string().starts_with("user dictionary line 2:"),
            "{error}"
        );
        let error = parse_user_dictionary("甲乙\n\n丙丁 many\n").expect_err("bad frequency");
        assert_eq!(error.line, 3);
        assert!(error.message.contains("positive whole number"), "{error}");
        let error = parse_user_dictionary("甲乙 0").expect_err("zero");
        assert_eq!(error.line, 1);
        let error = parse_user_dictionary("。。").expect_err("punctuation only");
        assert_eq!(error.line, 1);
    }

    #[test]
    fn no_place_names_in_the_product_vocabulary() {
        for word in GRID_WORDS {
            for place in ["街道", "里", "园", "苑", "新城", "家园"] {
                assert!(!word.ends_with(place), "{word} looks like a place name");
            }
        }
    }
}
