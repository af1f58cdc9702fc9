//! The long commands' progress bars: with stderr a pipe (a CI log, a script) every long
//! command prints no carriage return and no escape sequence, on stdout or stderr, and its
//! result lines are what they were; on a terminal (a pseudo-terminal from `script`) the bar
//! is drawn.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::BIN;

/// Runs `safegrid args…` with stdout and stderr piped (and a `TERM` that would draw, so that
/// only the missing terminal hides the bar); asserts it succeeded and wrote no control
/// characters; returns stdout and stderr.
fn piped(args: &[&str]) -> (String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("SAFEGRID_MASTER_KEY")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "safegrid {args:?} failed: {stdout}{stderr}"
    );
    for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains('\r') && !text.contains('\u{1b}'),
            "safegrid {args:?} wrote a control character on {stream}: {text:?}"
        );
    }
    (stdout, stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn long_commands_write_no_control_characters_without_a_terminal() {
    let root = tempfile::tempdir().expect("temporary directory");
    let data = root.path().join("street");
    let data = path(&data);
    piped(&[
        "demo",
        "--residents",
        "200",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--no-serve",
    ]);

    let (out, _) = piped(&["reindex", "--data-dir", data]);
    assert!(out.starts_with("indexed "), "{out}");

    piped(&[
        "keys",
        "rotate",
        "--data-dir",
        data,
        "--department",
        "gongan",
    ]);
    let (out, _) = piped(&[
        "keys",
        "reencrypt",
        "--data-dir",
        data,
        "--department",
        "gongan",
    ]);
    assert!(
        out.contains("rows this run") && out.contains("done"),
        "{out}"
    );

    piped(&["keys", "rotate-blind-index", "--data-dir", data]);
    let (out, _) = piped(&["keys", "reblind", "--data-dir", data]);
    assert!(out.starts_with("blind index: "), "{out}");

    let backup = root.path().join("backup");
    let (out, _) = piped(&["backup", "--data-dir", data, "--out", path(&backup)]);
    assert!(out.starts_with("backup written to "), "{out}");
    let restored = root.path().join("restored");
    let (out, _) = piped(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(&restored),
    ]);
    assert!(out.starts_with("restored "), "{out}");

    // A connector run (dry run: the records on stdout, the report on stderr).
    let folder = root.path().join("drop");
    std::fs::create_dir_all(&folder).expect("drop folder");
    std::fs::write(
        folder.join("residents.csv"),
        "编号,身份证号,姓名\n1,11010519491231002X,张三\n2,110105198001010016,李四\n",
    )
    .expect("csv");
    let config = root.path().join("minzheng.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "minzheng-list"
department = "minzheng"

[source]
type = "file_drop"
folder = {folder:?}
settle_seconds = 0

[mapping]
kind = "resident"
source_id = {{ template = "MZ-{{编号}}" }}

[mapping.fields]
id_number = "身份证号"
name = "姓名"

[mapping.constants]
grid = "110105001001003"
"#,
            folder = path(&folder)
        ),
    )
    .expect("config");
    let state = root.path().join("state");
    let (out, err) = piped(&[
        "connector",
        "run",
        path(&config),
        "--state-dir",
        path(&state),
        "--dry-run",
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("\"rows_read\": 2"), "{err}");

    // On a terminal the bar is drawn (where util-linux's `script` can make one).
    let command = format!("{BIN} reindex --data-dir {data}");
    match Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("SAFEGRID_MASTER_KEY")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(text.contains("indexed "), "{text:?}");
            // (A pseudo-terminal turns every newline into CR LF: only the escape sequences
            // tell a drawn bar.)
            assert!(
                text.contains('\u{1b}'),
                "no bar drawn on a terminal: {text:?}"
            );
        }
        other => eprintln!("no pseudo-terminal here, skipping the terminal half: {other:?}"),
    }
}
