//! The TLS transport's framing (issue 14), as the registry and a node read it: any bytes, split
//! anywhere, give the same frames; each is at most the maximum; re-encoding them gives the
//! bytes consumed. The same bytes as one WebSocket message give the same frames, and are
//! accepted whole only when they are whole frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::wire::stream::{encode, message_frames, Decoder, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let (split, bytes) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let mut whole = Decoder::new(MAX_FRAME);
    whole.push(bytes);
    let mut a = Vec::new();
    while let Ok(Some(f)) = whole.next() {
        assert!(f.len() <= MAX_FRAME);
        a.push(f.to_vec());
    }
    let mut parts = Decoder::new(MAX_FRAME);
    let mut b = Vec::new();
    'outer: for chunk in bytes.chunks(split) {
        parts.push(chunk);
        loop {
            match parts.next() {
                Ok(Some(f)) => b.push(f.to_vec()),
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    assert_eq!(a, b);
    let mut again = Vec::new();
    for f in &a {
        encode(f, &mut again).unwrap();
    }
    assert_eq!(&bytes[..again.len()], &again[..]);
    let mut in_message = Vec::new();
    let mut whole_message = true;
    for f in message_frames(bytes, MAX_FRAME) {
        match f {
            Ok(f) => in_message.push(f.to_vec()),
            Err(_) => whole_message = false,
        }
    }
    assert_eq!(in_message, a);
    assert_eq!(whole_message, again.len() == bytes.len());
});
