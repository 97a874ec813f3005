//! The file service's frames (overlay port 1004, protocol v1): a 5-byte header (kind, then a
//! 4-byte big-endian payload length) and the payload. Control frames carry one JSON object
//! (at most [`MAX_CONTROL`] bytes, `v` = 1, unknown fields refused); a data frame carries raw
//! file bytes (at most [`MAX_CHUNK`]). docs/PROTOCOL.md ("File transfer") gives the reason
//! for each field.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::FileError;

/// The overlay port of the file service.
pub const FILE_PORT: u16 = 1004;
/// The protocol version every control frame carries.
pub const VERSION: u8 = 1;
/// Largest control frame payload (JSON).
pub const MAX_CONTROL: usize = 16 * 1024;
/// Largest data frame payload the receiver takes.
pub const MAX_CHUNK: usize = 1 << 20;
/// The size of the data frames this sender writes. Not larger: a chunk is read, hashed and
/// copied to the socket while it is still in the CPU's cache (1 MiB frames were no faster in
/// bench/files.sh, 2026-12-05).
pub const CHUNK: usize = 256 * 1024;
/// Bytes of a frame header.
pub const HEADER: usize = 5;
/// Longest file name offered, in bytes.
pub const MAX_NAME: usize = 255;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Sender → receiver: [`Offer`].
    Offer = 1,
    /// Receiver → sender: [`Accept`].
    Accept = 2,
    /// Receiver → sender: [`Refuse`].
    Refuse = 3,
    /// Sender → receiver: file bytes at the next offset.
    Data = 4,
    /// Receiver → sender: [`Done`].
    Done = 5,
    /// Receiver → sender: [`Progress`].
    Progress = 6,
    /// Sender → receiver: [`End`] (after the last data frame of an offer without a hash).
    End = 7,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Offer,
            2 => FrameKind::Accept,
            3 => FrameKind::Refuse,
            4 => FrameKind::Data,
            5 => FrameKind::Done,
            6 => FrameKind::Progress,
            7 => FrameKind::End,
            _ => return None,
        })
    }
}

/// The sender's offer: the first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// Protocol version (1).
    pub v: u8,
    /// Transfer id, 32 hex digits chosen by the sender; with the sender's key it names the
    /// receiver's partial file, so a retry resumes it.
    pub id: String,
    /// The file name the sender suggests (no `/`, no control characters).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, 64 lowercase hex digits: checked end to end. Absent when
    /// the sender hashes while it sends: the hash then comes in an [`End`] frame after the
    /// last byte (so the file is read once, not twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The sender's hash of the whole file, after the last data frame of an offer without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    /// Protocol version (1).
    pub v: u8,
    /// The transfer.
    pub id: String,
    /// SHA-256 of the whole file, 64 lowercase hex digits.
    pub sha256: String,
}

/// The receiver takes the file from `offset` (its last verified, durable offset; 0 if new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    /// Protocol version (1).
    pub v: u8,
    /// The transfer.
    pub id: String,
    /// Where the sender continues.
    pub offset: u64,
}

/// Why a receiver refuses (before or during a transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefuseCode {
    /// Larger than the receiver's `[files] max_file_size` (final).
    TooLarge,
    /// The receiver's quota for received and partial files would be exceeded (retried).
    Quota,
    /// The receiver's disk would fall below its free-space floor, or is full (retried).
    DiskFull,
    /// The offer is malformed (a name, id or hash that is not allowed) (final).
    BadOffer,
    /// The received bytes do not hash to the offered SHA-256; the partial file is deleted
    /// (final).
    HashMismatch,
    /// The receiver is busy (too many transfers, or this one is still held) (retried).
    Busy,
    /// The receiver could not write (retried).
    Io,
    /// A code this version does not know (retried).
    #[serde(other)]
    Unknown,
}

impl RefuseCode {
    /// Whether the sender stops for good (otherwise it retries with backoff).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RefuseCode::TooLarge | RefuseCode::BadOffer | RefuseCode::HashMismatch
        )
    }

    /// The code as text (`too_large`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseCode::TooLarge => "too_large",
            RefuseCode::Quota => "quota",
            RefuseCode::DiskFull => "disk_full",
            RefuseCode::BadOffer => "bad_offer",
            RefuseCode::HashMismatch => "hash_mismatch",
            RefuseCode::Busy => "busy",
            RefuseCode::Io => "io",
            RefuseCode::Unknown => "unknown",
        }
    }
}

/// The receiver refuses the transfer, with a code and a text for the sender's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refuse {
    /// Protocol version (1).
    pub v: u8,
    /// The transfer.
    pub id: String,
    /// Machine-readable reason.
    pub code: RefuseCode,
    /// Human-readable reason (text from a peer: escape it before showing it).
    pub message: String,
}

/// The file is complete, verified and stored in the receiver's `received/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Done {
    /// Protocol version (1).
    pub v: u8,
    /// The transfer.
    pub id: String,
    /// The name it is stored under (the offered one, or a unique variant of it).
    pub stored_as: String,
    /// The SHA-256 the receiver computed (equal to the offer's).
    pub sha256: String,
}

/// The receiver's durable offset moved: bytes before it survive a crash of the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Protocol version (1).
    pub v: u8,
    /// The transfer.
    pub id: String,
    /// Bytes written and fsynced.
    pub offset: u64,
}

/// One decoded frame; data borrows the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// [`Offer`].
    Offer(Offer),
    /// [`Accept`].
    Accept(Accept),
    /// [`Refuse`].
    Refuse(Refuse),
    /// File bytes.
    Data(&'a [u8]),
    /// [`Done`].
    Done(Done),
    /// [`Progress`].
    Progress(Progress),
    /// [`End`].
    End(End),
}

/// Whether `id` is 32 hex digits (safe in a file name).
pub fn valid_id(id: &str) -> bool {
    crate::services::message_store::valid_id(id)
}

/// Whether `h` is a SHA-256 in lowercase hex.
pub fn valid_sha256(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` may name a file in `received/`: 1-255 bytes, no `/`, no NUL or other
/// control character, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// Reads a frame header: its kind and payload length, checked against the limits.
pub fn parse_header(h: [u8; HEADER]) -> Result<(FrameKind, usize), FileError> {
    let kind = FrameKind::from_u8(h[0])
        .ok_or_else(|| FileError::Malformed(format!("unknown frame kind {}", h[0])))?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let max = if kind == FrameKind::Data {
        MAX_CHUNK
    } else {
        MAX_CONTROL
    };
    if len > max {
        return Err(FileError::FrameTooLarge(len));
    }
    Ok((kind, len))
}

fn control<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, FileError> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| FileError::Malformed(e.to_string()))?;
    if v.get("v").and_then(|v| v.as_u64()) != Some(VERSION as u64) {
        return Err(FileError::Version);
    }
    serde_json::from_value(v).map_err(|e| FileError::Malformed(e.to_string()))
}

fn check_id(id: &str) -> Result<(), FileError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(FileError::Malformed("bad transfer id".into()))
    }
}

/// Decodes a payload of `kind`, checking the version and every field's shape.
pub fn decode(kind: FrameKind, payload: &[u8]) -> Result<Frame<'_>, FileError> {
    let f = match kind {
        FrameKind::Data => return Ok(Frame::Data(payload)),
        FrameKind::Offer => {
            let o: Offer = control(payload)?;
            if !valid_name(&o.name) || !o.sha256.as_deref().is_none_or(valid_sha256) {
                return Err(FileError::Malformed("bad name or sha256".into()));
            }
            Frame::Offer(o)
        }
        FrameKind::Accept => Frame::Accept(control(payload)?),
        FrameKind::Refuse => Frame::Refuse(control(payload)?),
        FrameKind::Done => Frame::Done(control(payload)?),
        FrameKind::Progress => Frame::Progress(control(payload)?),
        FrameKind::End => {
            let e: End = control(payload)?;
            if !valid_sha256(&e.sha256) {
                return Err(FileError::Malformed("bad sha256".into()));
            }
            Frame::End(e)
        }
    };
    let id = match &f {
        Frame::Offer(o) => &o.id,
        Frame::Accept(a) => &a.id,
        Frame::Refuse(r) => &r.id,
        Frame::Done(d) => &d.id,
        Frame::Progress(p) => &p.id,
        Frame::End(e) => &e.id,
        Frame::Data(_) => return Ok(f),
    };
    check_id(id)?;
    Ok(f)
}

/// Sans-IO: the first frame of `buf` and the bytes it took, or `None` if `buf` holds only
/// part of one.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FileError> {
    let Some(h) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let (kind, len) = parse_header(h.try_into().expect("five bytes"))?;
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Ok(None);
    };
    Ok(Some((decode(kind, payload)?, HEADER + len)))
}

/// A frame's header.
pub fn header(kind: FrameKind, len: usize) -> [u8; HEADER] {
    let l = (len as u32).to_be_bytes();
    [kind as u8, l[0], l[1], l[2], l[3]]
}

/// A control frame's bytes.
pub fn encode_control<T: Serialize>(kind: FrameKind, msg: &T) -> Result<Vec<u8>, FileError> {
    let body = serde_json::to_vec(msg).map_err(|e| FileError::Malformed(e.to_string()))?;
    if body.len() > MAX_CONTROL {
        return Err(FileError::FrameTooLarge(body.len()));
    }
    let mut out = header(kind, body.len()).to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes a control frame.
pub async fn write_control<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    kind: FrameKind,
    msg: &T,
) -> Result<(), FileError> {
    w.write_all(&encode_control(kind, msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads frames into one reusable buffer (at most [`MAX_CHUNK`] bytes).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame; `None` on a clean end of stream before a frame starts.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame<'_>>, FileError> {
        let mut h = [0u8; HEADER];
        let n = r.read(&mut h[..1]).await?;
        if n == 0 {
            return Ok(None);
        }
        r.read_exact(&mut h[1..]).await?;
        let (kind, len) = parse_header(h)?;
        // A recycled buffer keeps its length: shrinking it costs nothing, and only the bytes
        // beyond its length are zeroed before the read overwrites them.
        self.buf.resize(len, 0);
        r.read_exact(&mut self.buf).await?;
        decode(kind, &self.buf).map(Some)
    }

    /// The payload of the frame just read, owned (no copy): the reader keeps `spare` for the
    /// next frame instead (an emptied buffer handed back by the consumer, or a new one).
    pub fn take_payload(&mut self, spare: Vec<u8>) -> Vec<u8> {
        std::mem::replace(&mut self.buf, spare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            v: 1,
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "report.csv".into(),
            size: 42,
            sha256: Some("a".repeat(64)),
        }
    }

    #[test]
    fn an_offer_without_a_hash_and_its_end_frame_round_trip_and_a_bad_end_hash_is_refused() {
        let o = Offer {
            sha256: None,
            ..offer()
        };
        let bytes = encode_control(FrameKind::Offer, &o).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("sha256"));
        assert_eq!(parse_frame(&bytes).unwrap().unwrap().0, Frame::Offer(o));
        let e = End {
            v: 1,
            id: offer().id,
            sha256: "b".repeat(64),
        };
        let bytes = encode_control(FrameKind::End, &e).unwrap();
        assert_eq!(
            parse_frame(&bytes).unwrap().unwrap().0,
            Frame::End(e.clone())
        );
        for bad in ["B".repeat(64), "b".repeat(63), String::new()] {
            let bytes = encode_control(
                FrameKind::End,
                &End {
                    sha256: bad,
                    ..e.clone()
                },
            )
            .unwrap();
            assert!(parse_frame(&bytes).is_err());
        }
        let bad = Offer {
            sha256: Some("xyz".into()),
            ..offer()
        };
        let bytes = encode_control(FrameKind::Offer, &bad).unwrap();
        assert!(parse_frame(&bytes).is_err());
    }

    #[test]
    fn a_control_frame_round_trips_and_a_split_buffer_waits_for_more() {
        let bytes = encode_control(FrameKind::Offer, &offer()).unwrap();
        let (f, used) = parse_frame(&bytes).unwrap().unwrap();
        assert_eq!(f, Frame::Offer(offer()));
        assert_eq!(used, bytes.len());
        for cut in 0..bytes.len() {
            assert!(parse_frame(&bytes[..cut]).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn oversized_unknown_and_wrong_version_frames_are_refused() {
        let big = header(FrameKind::Data, MAX_CHUNK + 1);
        assert!(matches!(
            parse_frame(&big),
            Err(FileError::FrameTooLarge(_))
        ));
        let big = header(FrameKind::Offer, MAX_CONTROL + 1);
        assert!(matches!(
            parse_frame(&big),
            Err(FileError::FrameTooLarge(_))
        ));
        assert!(parse_frame(&[9, 0, 0, 0, 0]).is_err());
        let mut o = serde_json::to_value(offer()).unwrap();
        o["v"] = 2.into();
        let bytes = encode_control(FrameKind::Offer, &o).unwrap();
        assert!(matches!(parse_frame(&bytes), Err(FileError::Version)));
    }

    #[test]
    fn names_that_could_escape_received_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\nb",
            "\u{1b}[2J",
            &"x".repeat(256),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
            let mut o = offer();
            o.name = bad.into();
            let bytes = encode_control(FrameKind::Offer, &o).unwrap();
            assert!(parse_frame(&bytes).is_err(), "{bad:?}");
        }
        assert!(valid_name(".hidden") && valid_name("data (1).tar.gz"));
    }

    #[test]
    fn an_unknown_refusal_code_is_read_as_unknown_and_retried() {
        let r = serde_json::json!({"v":1,"id":"0123456789abcdef0123456789abcdef","code":"new_reason","message":"m"});
        let bytes = encode_control(FrameKind::Refuse, &r).unwrap();
        let Some((Frame::Refuse(r), _)) = parse_frame(&bytes).unwrap() else {
            panic!("not a refusal")
        };
        assert_eq!(r.code, RefuseCode::Unknown);
        assert!(!r.code.is_final());
    }
}
