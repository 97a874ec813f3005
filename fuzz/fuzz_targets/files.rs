//! File-service frames (port 1004) as a receiver reads them from a trusted peer's connection
//! (offer, data) and a sender reads them from the receiver (accept, refuse, progress, done):
//! the sans-IO parser and the async reader must agree frame by frame, never panic, and every
//! control frame read must encode again to bytes that read back equal.
#![no_main]

use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use pilot::services::files::wire::{
    encode_control, parse_frame, Frame, FrameKind, FrameReader, MAX_CHUNK,
};

/// Re-encodes a control frame; data frames are their payload.
fn reencode(f: &Frame<'_>) -> Vec<u8> {
    let r = match f {
        Frame::Offer(o) => encode_control(FrameKind::Offer, o),
        Frame::Accept(a) => encode_control(FrameKind::Accept, a),
        Frame::Refuse(r) => encode_control(FrameKind::Refuse, r),
        Frame::Done(d) => encode_control(FrameKind::Done, d),
        Frame::Progress(p) => encode_control(FrameKind::Progress, p),
        Frame::End(e) => encode_control(FrameKind::End, e),
        Frame::Data(d) => {
            assert!(d.len() <= MAX_CHUNK);
            return Vec::new();
        }
    };
    r.expect("a frame that was read encodes")
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut stream = data;
    let mut reader = FrameReader::default();
    loop {
        let parsed = parse_frame(rest);
        let read = reader
            .next(&mut stream)
            .now_or_never()
            .expect("reading from memory never waits");
        let (frame, used) = match parsed {
            Ok(Some(x)) => x,
            // An incomplete or refused frame: the reader stops too (end of stream or error).
            _ => {
                assert!(!matches!(read, Ok(Some(_))));
                return;
            }
        };
        assert_eq!(read.expect("the reader agrees").as_ref(), Some(&frame));
        let bytes = reencode(&frame);
        if !bytes.is_empty() {
            let (back, n) = parse_frame(&bytes).expect("re-encoded").expect("complete");
            assert_eq!(back, frame);
            assert_eq!(n, bytes.len());
        }
        rest = &rest[used..];
    }
});
