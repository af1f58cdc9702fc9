//! The process-wide segmenter takes a user dictionary installed before its first use. Its own
//! test binary: the segmenter is one per process, so no other test may touch it first.

use chinese_text::segment::{
    self, install_user_words, parse_user_dictionary, AlreadyInitialised, UserWord,
};

#[test]
fn an_installed_word_stays_whole_at_index_and_query_time() {
    let words =
        parse_user_dictionary("# this deployment's compounds\n梧桐湾北坊\n").expect("valid");
    assert_eq!(install_user_words(words.clone()), Ok(()));

    let text = "梧桐湾北坊3号楼楼道飞线充电";
    let precise: Vec<String> = segment::query_words(text)
        .into_iter()
        .flat_map(|w| w.alternatives)
        .collect();
    assert!(precise.contains(&"w:梧桐湾北坊".to_owned()), "{precise:?}");
    let indexed = segment::index_terms(text);
    assert!(indexed.contains(&"w:梧桐湾北坊".to_owned()), "{indexed:?}");
    // Written in traditional characters, the word is the same word.
    assert!(segment::search_words("梧桐灣北坊").contains(&"梧桐湾北坊".to_owned()));

    // The same words again (in any order) are fine; different ones are refused.
    assert_eq!(install_user_words(words), Ok(()));
    let other = vec![UserWord {
        word: "另一个词".to_owned(),
        frequency: None,
    }];
    assert_eq!(install_user_words(other), Err(AlreadyInitialised));
    assert_eq!(segment::shared().user_words().len(), 1);
}
