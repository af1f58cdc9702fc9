//! On-disk layout of the log directory: segment files, record frames, checkpoint file.
//!
//! ```text
//! segment-000000.log, segment-000001.log, …   (indices contiguous from 0)
//!   header: b"SGAUDIT\n" | u32 LE format version | u64 LE seq of the first record
//!   frames: u32 LE length n | n bytes canonical record | first 4 bytes of SHA-256(bytes)
//! checkpoints.log        signed notes, each followed by one empty line
//! checkpoint-public.key  the signed-note verifier key, one line
//! write-probe.tmp        short-lived: written, synced and removed to test the disk
//!                        while the log recovers from a failed write (ignored by readers)
//! ```
//!
//! The last segment of a running log ends in zeros after its last frame: the writer keeps
//! them written ahead (`log::WRITE_AHEAD_BYTES`) so that an append changes no file size.
//!
//! Guarantees: every byte of a segment is covered by a check (magic, version, first seq,
//! length consistency, frame hash) or, after the last frame of the last segment only, must be
//! zero, so a reader detects any changed, missing or extra byte; the frame hash is what lets
//! recovery tell a torn final write from a complete frame.

use std::path::{Path, PathBuf};

use ring::digest::{digest, SHA256};

/// Magic bytes at the start of every segment.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"SGAUDIT\n";
/// The on-disk format version this build writes and understands.
pub const LOG_FORMAT_VERSION: u32 = 1;
/// Bytes in a segment header.
pub(crate) const HEADER_LEN: usize = 20;
/// Largest canonical record accepted (bigger lengths are treated as corruption).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Bytes of framing around each record.
pub(crate) const FRAME_OVERHEAD: usize = 8;
/// Name of the checkpoint file in the log directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";
/// Name of the verifier key file in the log directory.
pub const PUBLIC_KEY_FILE: &str = "checkpoint-public.key";
/// Name of the file the writer uses to test the disk after a failed write.
pub(crate) const PROBE_FILE: &str = "write-probe.tmp";

/// File name of segment `index`.
pub(crate) fn segment_name(index: u32) -> String {
    format!("segment-{index:06}.log")
}

/// The segment files in `dir`, sorted by index. Indices are not checked for gaps.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name
            .strip_prefix("segment-")
            .and_then(|s| s.strip_suffix(".log"))
        else {
            continue;
        };
        if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(index) = digits.parse::<u32>() {
                out.push((index, entry.path()));
            }
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

pub(crate) fn encode_header(first_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    h
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer than `HEADER_LEN` bytes.
    Short,
    /// Not a segment file.
    BadMagic,
    /// A format version this build does not understand.
    UnsupportedVersion(u32),
}

/// Decodes a segment header into the seq of its first record.
pub(crate) fn decode_header(buf: &[u8]) -> Result<u64, HeaderError> {
    let h = buf.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
    if &h[..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != LOG_FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[12..20]);
    Ok(u64::from_le_bytes(seq))
}

pub(crate) fn frame_check(bytes: &[u8]) -> [u8; 4] {
    let d = digest(&SHA256, bytes);
    [d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]
}

/// Appends the frame of `bytes` to `out`; the caller keeps `bytes.len() <= MAX_RECORD_BYTES`.
pub(crate) fn encode_frame(bytes: &[u8], out: &mut Vec<u8>) {
    // Invariant: records are capped at MAX_RECORD_BYTES (1 MiB) before framing.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(&frame_check(bytes));
}

/// The result of reading one frame at an offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// Clean end of the buffer.
    End,
    /// A complete frame whose check matches.
    Ok { bytes: &'a [u8], next: usize },
    /// The frame runs past the end of the buffer (a torn write, or a garbled length).
    Torn,
    /// A complete-looking frame that fails its check or has an impossible length;
    /// `end` is where it would end.
    Bad { end: usize },
}

pub(crate) fn read_frame(buf: &[u8], off: usize) -> Frame<'_> {
    if off >= buf.len() {
        return Frame::End;
    }
    let Some(len_bytes) = buf.get(off..off + 4) else {
        return Frame::Torn;
    };
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    let end = off + FRAME_OVERHEAD + len;
    if end > buf.len() {
        return Frame::Torn;
    }
    let bytes = &buf[off + 4..off + 4 + len];
    if len == 0 || len > MAX_RECORD_BYTES || buf[end - 4..end] != frame_check(bytes) {
        return Frame::Bad { end };
    }
    Frame::Ok { bytes, next: end }
}

/// One entry of `checkpoints.log`: its byte offset and its note text.
#[derive(Debug)]
pub(crate) struct CheckpointEntry<'a> {
    pub offset: usize,
    pub note: &'a str,
}

/// Splits `checkpoints.log` into notes. Returns the entries and, if the file does not end
/// cleanly after an entry, the offset where the incomplete tail starts.
pub(crate) fn split_checkpoints(text: &str) -> (Vec<CheckpointEntry<'_>>, Option<usize>) {
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let Some(body_end) = rest.find("\n\n") else {
            return (entries, Some(pos));
        };
        let Some(sig_end) = rest[body_end + 2..].find("\n\n") else {
            return (entries, Some(pos));
        };
        let note_len = body_end + 2 + sig_end + 1;
        entries.push(CheckpointEntry {
            offset: pos,
            note: &rest[..note_len],
        });
        pos += note_len + 1;
    }
    (entries, None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"world!", &mut buf);
        let Frame::Ok { bytes, next } = read_frame(&buf, 0) else {
            panic!("first frame")
        };
        assert_eq!(bytes, b"hello");
        assert!(matches!(
            read_frame(&buf, next),
            Frame::Ok {
                bytes: b"world!",
                ..
            }
        ));
        assert_eq!(read_frame(&buf, buf.len()), Frame::End);
        assert_eq!(read_frame(&buf[..buf.len() - 1], next), Frame::Torn);
        let mut bad = buf.clone();
        bad[next + 5] ^= 1;
        assert_eq!(read_frame(&bad, next), Frame::Bad { end: buf.len() });
    }

    #[test]
    fn header_round_trip() {
        assert_eq!(decode_header(&encode_header(77)), Ok(77));
        let mut h = encode_header(1);
        h[8] = 2;
        assert_eq!(decode_header(&h), Err(HeaderError::UnsupportedVersion(2)));
        assert_eq!(decode_header(&h[..5]), Err(HeaderError::Short));
    }

    #[test]
    fn checkpoint_file_splits_into_notes() {
        let a = "o\n1\nAA==\n\n\u{2014} o sig\n";
        let b = "o\n2\nAA==\n\n\u{2014} o sig2\n";
        let text = format!("{a}\n{b}\n");
        let (entries, tail) = split_checkpoints(&text);
        assert_eq!(tail, None);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].note, a);
        assert_eq!(entries[1].note, b);
        assert_eq!(entries[1].offset, a.len() + 1);
        let torn = format!("{a}\n{}", &b[..6]);
        let (entries, tail) = split_checkpoints(&torn);
        assert_eq!(entries.len(), 1);
        assert_eq!(tail, Some(a.len() + 1));
    }
}
