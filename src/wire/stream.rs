//! Stream framing of the TLS transport (v1, issue 14): the datagrams a node and its registry
//! exchange over UDP, carried unchanged over a byte stream. See `docs/PROTOCOL.md`, "TLS
//! transport (v1, issue 14)".
//!
//! ```text
//! frame = length (u16, big endian) | datagram (length bytes)
//! ```
//!
//! A frame of length 0 is a keepalive and carries nothing. A frame longer than the receiver's
//! maximum (at most [`MAX_FRAME`]) is a protocol error: the connection is closed. The datagram
//! inside is exactly what UDP would carry (a signed registry message, a relay frame), so
//! signatures and the registry's rules are the same on both transports.
//!
//! [`Decoder`] is sans-IO: the transport appends what it read, then takes whole frames out.

/// ALPN protocol name of the transport; a future version gets a new name.
pub const ALPN: &[u8] = b"pilot-relay/1";
/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 2;
/// The largest datagram a frame may carry: a relay frame of the largest relay payload (1609
/// bytes) and every registry message fit.
pub const MAX_FRAME: usize = 2048;

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame announced more bytes than the receiver accepts.
    #[error("stream frame of {len} bytes is larger than the {max}-byte maximum")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// A WebSocket message ended inside a frame (a message carries whole frames only).
    #[error("a WebSocket message ends {missing} bytes short of its last frame")]
    Partial {
        /// Bytes the last frame lacked.
        missing: usize,
    },
}

/// Appends the frame around `datagram` to `out`. `datagram` must be at most [`MAX_FRAME`]
/// bytes (callers only frame datagrams they would have sent over UDP); longer ones are refused.
pub fn encode(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if datagram.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: datagram.len(),
            max: MAX_FRAME,
        });
    }
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Whether `addr` is a registry's name for a TLS connection (`0100::/8`, IETF-reserved: never
/// a real UDP source). A node attached over TLS is told such an address as its `observed`
/// one; it is no UDP candidate, so nodes never offer or try it.
pub fn is_connection_address(addr: &std::net::SocketAddr) -> bool {
    matches!(addr.ip(), std::net::IpAddr::V6(v6) if v6.segments()[0] >> 8 == 0x01)
}

/// The keepalive frame (an empty datagram).
pub const KEEPALIVE: [u8; LEN_BYTES] = [0, 0];

/// Takes whole frames out of the bytes read from a stream. Bounded: it holds at most one
/// partial frame plus one read.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl Decoder {
    /// A decoder accepting frames of at most `max` bytes (capped at [`MAX_FRAME`]).
    pub fn new(max: usize) -> Self {
        Decoder {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            max: max.min(MAX_FRAME),
        }
    }

    /// Room to read into: at least `n` bytes at the end of the buffer. Call
    /// [`Decoder::filled`] with how many were read.
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// Records that `read` of the bytes handed out by the last [`Decoder::spare`] of `n` were
    /// filled.
    pub fn filled(&mut self, n: usize, read: usize) {
        let keep = self.buf.len() - n + read.min(n);
        self.buf.truncate(keep);
    }

    /// Appends `bytes` (for callers that already hold them, and tests).
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        self.spare(n).copy_from_slice(bytes);
    }

    /// The next whole frame's datagram (empty for a keepalive), `Ok(None)` when more bytes are
    /// needed, or an error for a frame longer than the maximum.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([avail[0], avail[1]]));
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if avail.len() < LEN_BYTES + len {
            return Ok(None);
        }
        let s = self.start + LEN_BYTES;
        self.start = s + len;
        Ok(Some(&self.buf[s..s + len]))
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The frames of one binary WebSocket message (the WebSocket wrapping of the transport): whole
/// frames back to back, in order. Yields each frame's datagram (empty for a keepalive), then
/// stops; a frame longer than `max` (capped at [`MAX_FRAME`]) or cut short by the message's end
/// is an error, after which nothing more is yielded.
pub fn message_frames(msg: &[u8], max: usize) -> MessageFrames<'_> {
    MessageFrames {
        rest: msg,
        max: max.min(MAX_FRAME),
    }
}

/// See [`message_frames`].
#[derive(Debug)]
pub struct MessageFrames<'a> {
    rest: &'a [u8],
    max: usize,
}

impl<'a> Iterator for MessageFrames<'a> {
    type Item = Result<&'a [u8], FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some((len, body)) = rest.split_first_chunk::<LEN_BYTES>() else {
            return Some(Err(FrameError::Partial {
                missing: LEN_BYTES - rest.len(),
            }));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if len > self.max {
            return Some(Err(FrameError::TooLarge { len, max: self.max }));
        }
        if body.len() < len {
            return Some(Err(FrameError::Partial {
                missing: len - body.len(),
            }));
        }
        let (frame, rest) = body.split_at(len);
        self.rest = rest;
        Some(Ok(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_a_keepalive_is_empty() {
        let mut out = Vec::new();
        encode(b"hello", &mut out).unwrap();
        out.extend_from_slice(&KEEPALIVE);
        encode(&[7u8; MAX_FRAME], &mut out).unwrap();
        let mut d = Decoder::new(MAX_FRAME);
        d.push(&out);
        assert_eq!(d.next().unwrap(), Some(&b"hello"[..]));
        assert_eq!(d.next().unwrap(), Some(&[][..]));
        assert_eq!(d.next().unwrap().map(|f| f.len()), Some(MAX_FRAME));
        assert_eq!(d.next().unwrap(), None);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn an_oversized_frame_is_refused_and_cannot_be_encoded() {
        let mut out = Vec::new();
        assert!(encode(&[0u8; MAX_FRAME + 1], &mut out).is_err());
        let mut d = Decoder::new(100);
        d.push(&[0, 101]);
        assert_eq!(d.next(), Err(FrameError::TooLarge { len: 101, max: 100 }));
    }

    #[test]
    fn connection_addresses_are_the_reserved_0100_range_only() {
        assert!(is_connection_address(
            &"[100:0:7f00:1::1]:443".parse().unwrap()
        ));
        assert!(!is_connection_address(
            &"[2001:db8::1]:443".parse().unwrap()
        ));
        assert!(!is_connection_address(&"198.51.100.1:443".parse().unwrap()));
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let mut d = Decoder::new(MAX_FRAME);
        d.push(&[0]);
        assert_eq!(d.next().unwrap(), None);
        d.push(&[3, b'a', b'b']);
        assert_eq!(d.next().unwrap(), None);
        let spare = d.spare(10);
        spare[0] = b'c';
        d.filled(10, 1);
        assert_eq!(d.next().unwrap(), Some(&b"abc"[..]));
    }

    #[test]
    fn a_message_carries_whole_frames_only() {
        let mut msg = Vec::new();
        encode(b"ab", &mut msg).unwrap();
        msg.extend_from_slice(&KEEPALIVE);
        encode(b"c", &mut msg).unwrap();
        let got: Vec<_> = message_frames(&msg, MAX_FRAME).collect();
        assert_eq!(got, vec![Ok(&b"ab"[..]), Ok(&[][..]), Ok(&b"c"[..])]);
        let cut: Vec<_> = message_frames(&msg[..msg.len() - 1], MAX_FRAME).collect();
        assert_eq!(cut.last(), Some(&Err(FrameError::Partial { missing: 1 })));
        assert_eq!(
            message_frames(&[0], MAX_FRAME).collect::<Vec<_>>(),
            vec![Err(FrameError::Partial { missing: 1 })]
        );
        assert_eq!(
            message_frames(b"GET / HTTP/1.1", MAX_FRAME).next(),
            Some(Err(FrameError::TooLarge {
                len: 0x4745,
                max: MAX_FRAME
            })),
            "HTTP can never be taken for a frame"
        );
        assert_eq!(message_frames(&[], MAX_FRAME).next(), None);
    }

    proptest! {
        #[test]
        fn any_split_of_a_frame_sequence_decodes_the_same(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            cut in 1usize..97,
        ) {
            let mut wire = Vec::new();
            for f in &frames {
                encode(f, &mut wire).unwrap();
            }
            let mut d = Decoder::new(MAX_FRAME);
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                d.push(chunk);
                while let Some(f) = d.next().unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert_eq!(got, frames);
        }
    }
}
