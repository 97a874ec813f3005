//! Message-service frames as the receiver reads them from a trusted peer's connection: a
//! stream of length-prefixed JSON `WireMessage` frames (and the sender's side: `WireAck`
//! frames), read until the stream ends or a frame is refused, each checked by the service's
//! own `check_message`. Every frame read is written again and must read back equal.
#![no_main]

use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use pilot::services::message_store::{
    read_frame, valid_id, write_frame, WireAck, WireMessage, MAX_FRAME,
};
use pilot::services::messages::check_message;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads frames of `T` from `data` until the end or an error; returns how many.
fn read_all<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    mut data: &[u8],
    check: impl Fn(&T),
) -> usize {
    let mut n = 0;
    loop {
        let got = read_frame::<_, T>(&mut data)
            .now_or_never()
            .expect("reading from memory never waits");
        let Ok(Some(v)) = got else {
            return n;
        };
        n += 1;
        check(&v);
        let mut out = Vec::new();
        write_frame(&mut out, &v)
            .now_or_never()
            .expect("writing to memory never waits")
            .expect("a frame that was read is written");
        assert!(out.len() <= 4 + MAX_FRAME);
        let back = read_frame::<_, T>(&mut &out[..])
            .now_or_never()
            .expect("reading from memory never waits")
            .expect("a written frame reads")
            .expect("a written frame is there");
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    read_all::<WireMessage>(data, |m| {
        // The service's own checks (version, ids, payload against its type: base64 for
        // binary), as `serve_connection` runs them.
        let _ok = check_message(m).is_ok();
    });
    read_all::<WireAck>(data, |a| {
        let _ = valid_id(&a.ack);
    });
});
