//! Opening a dropped file so that the bytes read are those of the regular file that was checked.
//!
//! Guarantees:
//! - A file is opened without following a symbolic link (`O_NOFOLLOW`) and without waiting for
//!   a writer (`O_NONBLOCK`): a link, FIFO or socket swapped in after the folder was listed is
//!   refused as `file_not_regular`; it is never read and never blocks the run.
//! - Every check (regular file, age, size, unchanged) is made on the opened handle, and the
//!   bytes come from that same handle: nothing is checked by path and then read by path.
//! - A file larger than the cap is refused as `file_too_large` without reading it, and no more
//!   than cap + 1 bytes are ever read, even from a file that grows while it is read.
//! - Bytes are returned only if the file's modification time and length were the same before
//!   and after the read, and the folder entry still names the file that was read.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::ConnectorError;

/// Code of an entry that is not a regular file (a link, folder, FIFO, socket or device).
pub(crate) const FILE_NOT_REGULAR: &str = "file_not_regular";
/// Code of a file larger than `max_file_bytes`.
pub(crate) const FILE_TOO_LARGE: &str = "file_too_large";

/// Why a folder entry is not read: a stable code and a message that says what to fix. The
/// message never repeats the file's content or a link's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    /// An entry that is `what` ("a symbolic link", "a folder" …) instead of a regular file.
    pub(crate) fn not_regular(what: &str) -> Refusal {
        Refusal {
            code: FILE_NOT_REGULAR,
            message: format!(
                "the entry is {what}, not a regular file, so it was not read; drop the file \
                 itself into the folder (a copy, not a link)"
            ),
        }
    }

    fn too_large(len: u64, max_bytes: u64) -> Refusal {
        Refusal {
            code: FILE_TOO_LARGE,
            message: format!(
                "the file is {len} bytes, more than max_file_bytes = {max_bytes}, so it was not \
                 read; split it into smaller files or raise source.max_file_bytes"
            ),
        }
    }
}

/// What a folder entry is, in words, for [`Refusal::not_regular`].
pub(crate) fn describe(kind: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_block_device() || kind.is_char_device() {
            return "a device";
        }
    }
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a folder"
    } else {
        "something other than a file"
    }
}

/// What became of one listed file.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Settled and read whole.
    Settled {
        bytes: Vec<u8>,
        modified: SystemTime,
    },
    /// Younger than the settle time, or changed while it was read: left for a later run.
    Waiting,
    /// Gone since the listing.
    Vanished,
    /// Not read, for the reason given.
    Refused(Refusal),
}

/// Opens `path` for reading without following a final symbolic link and without blocking on a
/// FIFO.
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK has no effect on reads from a regular file; it only keeps the open of a
        // FIFO from waiting for a writer. O_NOCTTY keeps a terminal device from being adopted.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

/// The refusal an open error stands for: `O_NOFOLLOW` on a link fails with `ELOOP`, and a
/// socket (or a device without a driver) with `ENXIO`.
fn refusal_for_open_error(err: &std::io::Error) -> Option<Refusal> {
    #[cfg(unix)]
    {
        match err.raw_os_error() {
            Some(libc::ELOOP) => return Some(Refusal::not_regular("a symbolic link")),
            Some(libc::ENXIO) => return Some(Refusal::not_regular("a socket or a device")),
            _ => {}
        }
    }
    #[cfg(not(unix))]
    let _ = err;
    None
}

/// Whether the folder entry `path` still names the file behind `opened` (so the file moved
/// aside after ingesting is the one that was read).
fn entry_is(path: &Path, opened: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .is_ok_and(|entry| entry.dev() == opened.dev() && entry.ino() == opened.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = opened;
        std::fs::symlink_metadata(path).is_ok_and(|entry| entry.file_type().is_file())
    }
}

/// Opens the listed file `path` and reads it whole if it is a regular file that has been
/// unchanged for `settle`, no larger than `max_bytes`, and unchanged while it was read.
pub(crate) fn read_settled(
    path: &Path,
    settle: Duration,
    max_bytes: u64,
) -> Result<Opened, ConnectorError> {
    let io_error = |e| ConnectorError::io(format!("reading {}", path.display()), e);
    let file = match open_no_follow(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::Vanished),
        Err(err) => {
            return match refusal_for_open_error(&err) {
                Some(refusal) => Ok(Opened::Refused(refusal)),
                None => Err(io_error(err)),
            }
        }
    };
    let before = file.metadata().map_err(io_error)?;
    if !before.file_type().is_file() {
        return Ok(Opened::Refused(Refusal::not_regular(describe(
            &before.file_type(),
        ))));
    }
    let modified = before.modified().map_err(io_error)?;
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    if age < settle {
        return Ok(Opened::Waiting);
    }
    let len = before.len();
    if len > max_bytes {
        return Ok(Opened::Refused(Refusal::too_large(len, max_bytes)));
    }
    // One byte more than the length, so growth shows as a changed file rather than being cut.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&file)
        .take(len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    let after = file.metadata().map_err(io_error)?;
    // A writer that resumed while we read, or a file replaced under its name: leave it for the
    // next run.
    let unchanged = after.modified().ok() == Some(modified)
        && after.len() == len
        && bytes.len() as u64 == len
        && entry_is(path, &after);
    if !unchanged {
        return Ok(Opened::Waiting);
    }
    Ok(Opened::Settled { bytes, modified })
}
