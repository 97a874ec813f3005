//! Registry responses and pushes as a node's registry client parses them: `Response::decode`,
//! then (for pushes) the forwarded original as a signed request. Every decoded response is
//! encoded again under a fixed registry key: the bytes before the signature must be identical
//! (the encoding is canonical), the result verifies, and decode(encode(x)) == x. A `Challenge`
//! is unsigned: it must be exactly the bytes `Response::challenge` makes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pilot::identity::Identity;
use pilot::wire::registry::{Request, Response, ResponseBody};

const SIG: usize = 64;

fn registry() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_seed([9; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = Response::decode(data) else {
        return;
    };
    match &resp.body {
        ResponseBody::PushTrustRequest { original, .. }
        | ResponseBody::PushTrustResponse { original, .. }
        | ResponseBody::PushEndpointRequest { original, .. }
        | ResponseBody::EndpointInfo { original, .. } => {
            let _ = Request::decode_verified(original);
        }
        _ => {}
    }
    if let ResponseBody::Challenge { cookie } = &resp.body {
        // The one unsigned answer: exactly its fixed-size bytes, and canonical.
        assert_eq!(Response::challenge(&resp.in_reply_to, cookie), data);
        return;
    }
    let id = registry();
    let bytes = resp
        .encode_signed(id)
        .unwrap_or_else(|e| panic!("decoded but does not encode: {e}: {resp:?}"));
    assert_eq!(
        bytes[..bytes.len() - SIG],
        data[..data.len() - SIG],
        "encoding is not canonical for {resp:?}"
    );
    assert!(Response::verify(&bytes, &id.public_key()));
    assert_eq!(Response::decode(&bytes).as_ref(), Ok(&resp));
});
