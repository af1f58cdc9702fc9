//! `safegrid keys …` as an operator runs it, on a demo street's data directory: a blind-index
//! rotation, re-computation interrupted by `--limit` and finished, and the status lines that
//! report it; then a data-key rotation and its status.

use crate::common;

fn safegrid(args: &[&str]) -> String {
    let (ok, text) = common::run(args);
    assert!(ok, "safegrid {args:?} failed: {text}");
    text
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in: {text}"))
}

#[test]
fn an_operator_rotates_the_blind_index_key_from_the_command_line() {
    let root = tempfile::tempdir().expect("temporary directory");
    let data = root.path().join("street");
    let data = data.to_str().expect("utf-8 path");
    safegrid(&[
        "demo",
        "--residents",
        "300",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--no-serve",
    ]);
    let status = safegrid(&["keys", "status", "--data-dir", data]);
    assert_eq!(
        line(&status, "blind index:"),
        "blind index: current version 1; re-computation never needed"
    );

    let rotated = safegrid(&["keys", "rotate-blind-index", "--data-dir", data]);
    assert!(
        rotated.starts_with("blind-index key version 2 is current"),
        "{rotated}"
    );
    let status = safegrid(&["keys", "status", "--data-dir", data]);
    assert!(
        line(&status, "blind index:").starts_with(
            "blind index: current version 2; re-computation pending (0 rows so far; versions [1] still loaded)"
        ),
        "{status}"
    );

    let partial = safegrid(&["keys", "reblind", "--data-dir", data, "--limit", "100"]);
    assert!(
        partial.starts_with("blind index: 100 rows this run; 100 rows visited"),
        "{partial}"
    );
    assert!(partial.contains("not done yet"), "{partial}");
    let finished = safegrid(&["keys", "reblind", "--data-dir", data]);
    assert!(
        finished.contains("done (retired versions [1])"),
        "{finished}"
    );
    let status = safegrid(&["keys", "status", "--data-dir", data]);
    let blind = line(&status, "blind index:");
    assert!(
        blind.starts_with("blind index: current version 2; re-computation done (")
            && blind.ends_with("rows re-keyed, versions [1] retired)"),
        "{status}"
    );
    // Residents were re-keyed (the demo publishes hundreds), houses and events were not.
    let rekeyed: u64 = blind
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count of re-keyed rows");
    assert!(rekeyed >= 300, "{blind}");

    // A data-key rotation next to it reports its own progress.
    let rotated = safegrid(&[
        "keys",
        "rotate",
        "--data-dir",
        data,
        "--department",
        "minzheng",
    ]);
    assert!(
        rotated.starts_with("minzheng: data key version 2 is current"),
        "{rotated}"
    );
    let done = safegrid(&[
        "keys",
        "reencrypt",
        "--data-dir",
        data,
        "--department",
        "minzheng",
    ]);
    assert!(done.contains("done"), "{done}");
    let status = safegrid(&["keys", "status", "--data-dir", data]);
    assert!(
        line(&status, "minzheng:").starts_with("minzheng: current version 2; re-encryption done"),
        "{status}"
    );
}
