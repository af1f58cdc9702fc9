//! `safegrid compact`: the store file of a stopped broker shrinks, everything in it stays
//! readable, and a store in use is refused rather than rewritten under the broker.

use crate::common::{demo, run, serve_with};

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).expect("store file").len()
}

#[test]
fn a_loaded_store_shrinks_keeps_every_entity_and_is_refused_while_served() {
    let root = tempfile::tempdir().expect("temporary directory");
    let data = root.path().join("street");
    let data_str = data.to_str().expect("utf-8 path");
    demo(data_str, 400, 7);
    let store = data.join("store.redb");

    let (ok, before_index) = run(&["reindex", "--data-dir", data_str]);
    assert!(ok, "{before_index}");
    let before = size(&store);

    let (ok, text) = run(&["compact", "--data-dir", data_str]);
    assert!(ok, "{text}");
    assert!(text.contains("compacted"), "{text}");
    let after = size(&store);
    assert!(after < before, "{after} bytes after, {before} before");

    // Every entity is still read back from the compacted file.
    let (ok, after_index) = run(&["reindex", "--data-dir", data_str]);
    assert!(ok, "{after_index}");
    let count = |text: &str| text.split_whitespace().nth(1).map(str::to_owned);
    assert_eq!(count(&before_index), count(&after_index));
    assert!(
        count(&after_index).is_some_and(|n| n != "0"),
        "{after_index}"
    );

    let mut server = serve_with(&data, &[]);
    let (ok, text) = run(&["compact", "--data-dir", data_str]);
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert!(!ok, "compacted a store in use: {text}");
    assert!(text.contains("stop the broker"), "{text}");

    let (ok, text) = run(&[
        "compact",
        "--data-dir",
        root.path().join("none").to_str().unwrap_or(""),
    ]);
    assert!(!ok && text.contains("no store"), "{text}");
}
