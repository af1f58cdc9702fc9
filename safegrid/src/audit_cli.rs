//! `safegrid audit verify`: offline verification of an audit log directory.
//!
//! Guarantees: the exit code says what failed (0 verified; 2 corrupt log; 3 bad checkpoint
//! signature; 4 log altered after a checkpoint; 5 inconsistent with the saved checkpoint;
//! 6 request id not found or not included; 7 unreadable key or files).

use std::path::Path;
use std::process::ExitCode;

use audit::{load_public_key, verify_log_dir, VerifyOptions};

/// Runs the verification and prints a short report; returns the process exit code.
pub fn verify(
    log_dir: &Path,
    public_key: &Path,
    checkpoint: Option<&Path>,
    request_id: Option<String>,
) -> ExitCode {
    let result = (|| {
        let key = load_public_key(public_key)?;
        let saved_checkpoint = match checkpoint {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                audit::VerifyError::KeyOrIo(format!("read {}: {e}", path.display()))
            })?),
            None => None,
        };
        verify_log_dir(
            log_dir,
            &key,
            VerifyOptions {
                saved_checkpoint,
                request_id,
            },
        )
    })();
    match result {
        Ok(report) => {
            println!(
                "OK: {} records in {} segments; {} checkpoints verified; root {}",
                report.records,
                report.segments,
                report.checkpoints,
                hex::encode(report.root)
            );
            if report.unsigned_records > 0 {
                println!(
                    "note: {} records after the latest checkpoint are hashed but not yet signed",
                    report.unsigned_records
                );
            }
            if let Some(size) = report.saved_checkpoint_size {
                println!("the log extends the saved checkpoint of size {size}");
            }
            if let Some(inclusion) = report.inclusion {
                println!(
                    "record {} is included in the checkpoint of size {}",
                    inclusion.seq, inclusion.checkpoint_size
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("FAILED: {err}");
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
        }
    }
}
