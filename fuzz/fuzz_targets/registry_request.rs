//! Registry requests as a registry (or a peer, for trust messages) parses them.
//!
//! Raw bytes go through `Request::decode_verified`, which decodes every field before it checks
//! the signature, so `BadSignature` means "decoded" (seeds carry valid signatures). Such bytes are then re-signed by a fixed
//! fuzz identity (its key written over the sender field) and must decode, and encode back to
//! exactly the same bytes: the encoding is canonical and decode(encode(x)) == x.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pilot::identity::Identity;
use pilot::wire::registry::{Request, WireError, SIGNATURE_DOMAIN};

/// Sender key field: after magic, version and type.
const KEY: std::ops::Range<usize> = 3..35;
const SIG: usize = 64;

fn fuzz_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_seed([7; 32]))
}

fn resign(data: &[u8], id: &Identity) -> Vec<u8> {
    let mut v = data[..data.len() - SIG].to_vec();
    v[KEY].copy_from_slice(id.public_key().as_bytes());
    let mut signed = SIGNATURE_DOMAIN.to_vec();
    signed.extend_from_slice(&v);
    let sig = id.sign(&signed);
    v.extend_from_slice(&sig);
    v
}

fuzz_target!(|data: &[u8]| {
    match Request::decode_verified(data) {
        Ok(_) | Err(WireError::BadSignature) => {
            let id = fuzz_identity();
            let bytes = resign(data, id);
            let req = Request::decode_verified(&bytes)
                .unwrap_or_else(|e| panic!("decoded once, refused once re-signed: {e}"));
            let again = req.encode_signed(id).expect("a decoded request encodes");
            assert_eq!(again, bytes, "encoding is not canonical for {req:?}");
            assert_eq!(Request::decode_verified(&again).as_ref(), Ok(&req));
        }
        Err(_) => {}
    }
});
